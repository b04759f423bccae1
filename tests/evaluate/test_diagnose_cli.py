"""grm_jax/evaluate/diagnose.py's command line, called from Python."""

from __future__ import annotations

from grm_jax.evaluate import diagnose

PROG = "python -m grm_jax.evaluate.diagnose"


def test_main_reports_a_missing_workdir_on_one_line(tmp_path, capsys):
    assert diagnose.main([PROG, "--workdir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(tmp_path / "none") in err[0]


def test_main_twice_in_one_process_reads_each_argv(tmp_path, capsys):
    for name in ("first", "second"):
        assert diagnose.main([PROG, f"--workdir={tmp_path / name}"]) == 1
        assert str(tmp_path / name) in capsys.readouterr().err


def test_main_help_and_flag_errors(capsys):
    assert diagnose.main([PROG, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(diagnose.__doc__.strip()[:40]) and "--workdir" in out and "--data_dir" in out
    assert diagnose.main([PROG, "--bogus"]) == 2
    assert capsys.readouterr().err.strip() == "error: Unknown command line flag 'bogus' (see --help)"
    assert diagnose.main([PROG, "extra"]) == 2
