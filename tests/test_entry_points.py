"""``train.py`` and ``eval.py`` end to end on a very small synthetic run (subprocesses, as a user runs them)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    overrides = [f"--config.data.data_dir={base / 'tfds'}", "--config.data.synthetic.num_train=4",
                 "--config.data.synthetic.num_val=2", "--config.data.synthetic.max_length=60"]
    proc = _run(["train.py", "--workdir", str(base / "run"), "--config.train.epochs=1",
                 "--config.data.sample_per_epoch=48", "--config.train.log_every_steps=2", *overrides])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return base, overrides, proc.stdout


@pytest.mark.timeout(900)
def test_train_py_trains_and_evaluates(small_run):
    base, _, stdout = small_run
    run = base / "run"
    assert (run / "checkpoints" / "6").is_dir()  # 48 samples / batch 8 = 6 steps, final checkpoint
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in ("Ls/total", "Ls/giou", "Ls/l1", "Ls/loc", "IoU", "grad_norm", "lr/head", "lr/backbone",
                "lr/divide", "interaction_ratio", "samples_per_s"):
        assert key in records[-1], key
    assert len(records[-1]["interaction_ratio"]) == 3  # one per division layer
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    results = sorted((run / "results" / "synthetic").glob("synthetic-*.txt"))
    assert len(results) == 2
    assert (run / "results" / "synthetic" / "report_synthetic.md").is_file()
    assert (run / "results" / "synthetic" / "success_synthetic.png").is_file()
    assert "synthetic: AUC" in stdout


@pytest.mark.timeout(900)
def test_eval_py_device_crop_and_analyze_only(small_run):
    base, overrides, _ = small_run
    proc = _run(["eval.py", "--checkpoint", str(base / "run"), "--crop", "device", "--results_dir",
                 str(base / "device"), *overrides])
    assert proc.returncode == 0, proc.stderr[-4000:]
    host = base / "run" / "results" / "synthetic"
    for path in sorted(host.glob("synthetic-*.txt")):
        ours = np.loadtxt(base / "device" / path.name, delimiter=",")
        ref = np.loadtxt(path, delimiter=",")
        assert ours.shape == ref.shape
        # Device crops equal OpenCV's when downscaling; integer result files differ by at most a pixel here.
        assert np.abs(ours - ref).max() <= 1, path.name
    proc = _run(["eval.py", "--analyze_only", *overrides, "--results_dir", str(base / "report"), f"host={host}",
                 f"device={base / 'device'}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (base / "report" / "report_synthetic.md").read_text()
    assert "| host |" in table and "| device |" in table


def test_eval_py_names_a_missing_checkpoint(tmp_path):
    proc = _run(["eval.py", "--checkpoint", str(tmp_path / "nothing")], timeout=300)
    assert proc.returncode != 0 and "no checkpoint in" in proc.stderr
