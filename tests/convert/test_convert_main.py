"""``python -m grm_jax.convert`` (grm_jax/convert/__main__.py) called from Python: ``main(argv)``."""

from __future__ import annotations

from grm_jax.convert.__main__ import main
from helpers import OFFICIAL, config_spec

PROG = "grm-convert"
TINY_PTH = str(OFFICIAL / "grm_tiny" / "state_dict.pth")


def test_main_twice_in_one_process_with_other_steps(tmp_path, capsys):
    """The same subcommand twice with another ``--step``: each run writes the step its own flags name."""
    for step in ("0", "7"):
        assert main([PROG, "to-orbax", "--config", config_spec("tiny"), "--input", TINY_PTH, "--output",
                     str(tmp_path / "ckpt"), "--step", step]) == 0
        assert f"wrote {tmp_path / 'ckpt' / step} " in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == ["0", "7"]


def test_main_subcommands_help_and_errors(tmp_path, capsys):
    assert main([PROG, "--help"]) == 0
    assert "to-orbax" in capsys.readouterr().out
    assert main([PROG, "to-torch", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to-torch: Orbax checkpoint → official state dict") and "--checkpoint" in out
    assert main([PROG]) == 2
    assert capsys.readouterr().err.strip() == ("error: missing command (one of: to-orbax, to-torch, init-backbone; "
                                               "see --help)")
    assert main([PROG, "to-jax"]) == 2
    assert "unknown command 'to-jax'" in capsys.readouterr().err
    assert main([PROG, "to-torch", "--output", str(tmp_path / "o.pth")]) == 2  # --checkpoint is required
    assert "--checkpoint" in capsys.readouterr().err
    assert main([PROG, "to-torch", "--checkpoint", str(tmp_path / "none"), "--output", str(tmp_path / "o.pth")]) == 1
    assert capsys.readouterr().err.strip().startswith("error: checkpoint directory")
    assert list(tmp_path.iterdir()) == []
