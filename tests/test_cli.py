"""Every entry point: an ordinary mistake gives one ``error:`` line and a non-zero exit (grm_jax/cli.py), and creates
nothing; ``main(argv)`` runs from Python, again with other arguments in the same process."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from grm_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
MISSING = "does/not/exist"
TINY = ["--config", "configs/grm.py:tiny"]
PTH = "tests/fixtures/official/grm_tiny/state_dict.pth"

ENTRY_POINTS_MISSING_PATH = {
    "train.py": ["train.py", "--config", f"{MISSING}.py"],
    "eval.py": ["eval.py", *TINY, "--checkpoint", MISSING],
    "eval.py data": ["eval.py", *TINY, "--checkpoint", PTH, "--dataset", "otb", "--data_dir", MISSING],
    "track": ["-m", "grm_jax.track", *TINY, "--checkpoint", PTH, "--video", f"{MISSING}.mp4", "--box=1,2,3,4",
              "--out", "{tmp}/o.mp4"],
    "export": ["-m", "grm_jax.export", *TINY, "--checkpoint", MISSING, "--output", "{tmp}/export"],
    "viz.curves": ["-m", "grm_jax.viz.curves", MISSING],
    "datasets": ["-m", "grm_jax.data.datasets", "LASOT", MISSING, "{tmp}/data"],
    "convert": ["-m", "grm_jax.convert", "to-orbax", *TINY, "--input", f"{MISSING}.pth", "--output", "{tmp}/o"],
    "compare": ["-m", "grm_jax.compare", "--checkpoint", MISSING, "--reference", f"{MISSING}.npz"],
}
WITH_CONFIG = {"train.py": ["train.py"], "eval.py": ["eval.py"], "track": ["-m", "grm_jax.track"],
        "export": ["-m", "grm_jax.export"]}


def _run(args, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("GRM_JAX_TRACEBACK", None)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    """stderr without a usage block (``usage:`` and its indented continuation lines)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(("usage:", " "))]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(ENTRY_POINTS_MISSING_PATH))
def test_missing_path_is_one_line(name, tmp_path):
    proc = _run(ENTRY_POINTS_MISSING_PATH[name], tmp_path)
    lines = _error_lines(proc.stderr)
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    assert MISSING in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(WITH_CONFIG))
def test_unknown_config_key_is_one_line_with_the_nearest_keys(name, tmp_path):
    proc = _run([*WITH_CONFIG[name], "--config.model.nonexistent=1", "--config.train.bach_size=3"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown config key model.nonexistent (nearest: model.attention, model.backbone, model.dtype) "
        "(see --help)"]


@pytest.mark.timeout(900)
def test_unknown_config_key_names_the_misspelt_one(tmp_path):
    proc = _run(["train.py", "--config.train.bach_size=3"], tmp_path)
    assert proc.returncode == 2 and "unknown config key train.bach_size (nearest: train.batch_size" in proc.stderr


@pytest.mark.timeout(900)
@pytest.mark.parametrize("override,named", [("--config.train.batch_size=0", "config.train.batch_size = 0"),
                                            ("--config.eval.crop=gpu", "config.eval.crop = 'gpu'"),
                                            ("--config.test.hyper.DEFAULT=1.5", "config.test.hyper.DEFAULT = 1.5")])
def test_invalid_config_value_stops_before_anything_is_created(override, named, tmp_path):
    proc = _run(["train.py", "--workdir", str(tmp_path / "run"), override], tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {named}")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(900)
def test_threshold_flag_follows_the_config_rule(tmp_path):
    proc = _run(["eval.py", *TINY, "--checkpoint", PTH, "--threshold", "1.5"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: --threshold = 1.5 must be in [0, 1)"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(WITH_CONFIG))
def test_help_lists_the_config_overrides(name, tmp_path):
    proc = _run([*WITH_CONFIG[name], "--help"], tmp_path)
    assert proc.returncode == 0
    assert "--config.train.max_steps=0" in proc.stdout and "--config.model.embed_dim=" in proc.stdout


def _script(name: str):
    """The top-level script ``name.py`` (train, eval) as a module, loaded from its file (not run)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_main_twice_in_one_process_from_another_directory(tmp_path, monkeypatch, capsys):
    """Each call reads its own ``--config.*`` overrides; the default config is found from any directory."""
    train = _script("train")
    monkeypatch.chdir(tmp_path)
    for override, named in [("--config.train.batch_size=0", "config.train.batch_size = 0"),
                            ("--config.eval.crop=gpu", "config.eval.crop = 'gpu'")]:
        assert train.main(["train.py", "--workdir", str(tmp_path / "run"), override]) == 1
        assert capsys.readouterr().err.strip().startswith(f"error: {named}")
    assert train.main(["train.py", "--config.train.bach_size=3"]) == 2
    assert "unknown config key train.bach_size (nearest: train.batch_size" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_eval_main_help_and_two_thresholds(capsys):
    evaluate = _script("eval")
    assert evaluate.main(["eval.py", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config.train.max_steps=0" in out and "--analyze_only" in out and "-v,--verbosity" in out
    for threshold in ("1.5", "2.5"):
        assert evaluate.main(["eval.py", *TINY, "--checkpoint", str(ROOT / PTH), "--threshold", threshold]) == 1
        assert capsys.readouterr().err.strip() == f"error: --threshold = {threshold} must be in [0, 1)"


def test_config_given_sees_config_and_model_overrides():
    """Whether the command line chose the model config (a ``.pth`` checkpoint then needs no recorded config)."""
    evaluate = _script("eval")
    for argv, given in [(["eval.py"], False), (["eval.py", "--config.eval.crop=device"], False),
                        (["eval.py", "--config.model.embed_dim=64"], True), (["eval.py", *TINY], True)]:
        fv, _ = cli.parse(argv, evaluate.define_flags, None, config=evaluate.DEFAULT_CONFIG)
        assert cli.config_given(fv) is given, argv


def test_console_scripts_run_the_mains(tmp_path):
    """pyproject.toml's ``[project.scripts]`` name each package entry point's ``main``; where ``pip install -e .``
    installed them beside this interpreter, they run (``--help`` from another directory)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) >= {"grm-track", "grm-export", "grm-convert", "grm-compare", "grm-report", "grm-diagnose",
                            "grm-curves", "grm-datasets"}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    installed = pathlib.Path(sys.executable).parent / "grm-compare"
    assert installed.exists(), f"{installed} missing: install the package (make install, i.e. pip install -e .)"
    proc = subprocess.run([str(installed), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0 and "--reference" in proc.stdout, proc.stderr[-2000:]
