"""Every entry point: an ordinary mistake gives one ``error:`` line and a non-zero exit (grm_jax/cli.py for the absl
ones, argparse for the others), and creates nothing."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

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
ABSL = {"train.py": ["train.py"], "eval.py": ["eval.py"], "track": ["-m", "grm_jax.track"],
        "export": ["-m", "grm_jax.export"]}


def _run(args, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("GRM_JAX_TRACEBACK", None)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    """stderr without argparse's usage block (``usage:`` and its indented continuation lines)."""
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
@pytest.mark.parametrize("name", list(ABSL))
def test_unknown_config_key_is_one_line_with_the_nearest_keys(name, tmp_path):
    proc = _run([*ABSL[name], "--config.model.nonexistent=1", "--config.train.bach_size=3"], tmp_path)
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
@pytest.mark.parametrize("name", list(ABSL))
def test_help_lists_the_config_overrides(name, tmp_path):
    proc = _run([*ABSL[name], "--help"], tmp_path)  # (absl's --help exits 1 after printing)
    assert "--config.train.max_steps=0" in proc.stdout and "--config.model.embed_dim=" in proc.stdout
