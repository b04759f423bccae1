"""The training loop: data parallelism is exact, resume is exact, damaged checkpoints and NaNs are handled.

Each run happens in a subprocess (fake CPU devices must be configured before jax starts) with a timeout.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

DRIVER = pathlib.Path(__file__).with_name("train_driver.py")
ROOT = DRIVER.parents[2]


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                PYTHONPATH=str(ROOT))


def _run(workdir, steps, devices, *extra, timeout=600):
    # The process exposes exactly the devices it uses: XLA's CPU thread pools (and so float32 summation order)
    # depend on the device count, and bit-exact comparisons need identical programs.
    proc = subprocess.run([sys.executable, str(DRIVER), str(workdir), str(steps), str(devices), *extra],
                          env=_env(devices), capture_output=True, text=True, timeout=timeout)
    return proc


def _result(workdir):
    return dict(np.load(pathlib.Path(workdir) / "result.npz"))


def _params(result):
    return {k: v for k, v in result.items() if k.startswith("p:")}


@pytest.mark.timeout(900)
def test_one_device_equals_four_devices(tmp_path):
    """Same global batch of 4 on 1 device (b=4) and on 4 fake devices (b=1), synchronised BatchNorm, DropPath on
    (its masks and the Gumbel noise are keyed by the global sample index): equal."""
    one = _run(tmp_path / "one", 5, 1, "--sync", "--droppath", "0.1")
    assert one.returncode == 0, one.stderr[-3000:]
    four = _run(tmp_path / "four", 5, 4, "--sync", "--droppath", "0.1")
    assert four.returncode == 0, four.stderr[-3000:]
    a, b = _result(tmp_path / "one"), _result(tmp_path / "four")
    # Losses per step and parameters after 5 steps: float32 sums split differently across devices, 1e-5 relative.
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
    # All parameters as one vector: ‖four − one‖ / ‖one‖ ≤ 1e-5 (the acceptance figure). Per tensor ≤ 1e-3: Adam
    # divides by √v, so tensors that start at zero and get tiny gradients (the division MLPs' biases) carry the
    # reordered float32 sums at up to ~1.2e-4 of their own small norm after 5 steps (measured).
    pa, pb = _params(a), _params(b)
    diff = np.sqrt(sum(np.sum((pb[k] - pa[k]).astype(np.float64) ** 2) for k in pa))
    norm = np.sqrt(sum(np.sum(pa[k].astype(np.float64) ** 2) for k in pa))
    assert diff / norm <= 1e-5, diff / norm
    for key, value in pa.items():
        if key.startswith("p:box_head/conv") and key.endswith("_0/bias") and "conv5" not in key:
            # A conv bias followed by BatchNorm has an exactly-zero gradient in exact arithmetic (the batch mean
            # removes it); Adam turns its float32 rounding noise into ±lr steps, differently per run.
            continue
        rel = np.linalg.norm(pb[key] - value) / np.linalg.norm(value)
        assert rel <= 1e-3, (key, rel)


@pytest.mark.timeout(900)
def test_pmap_and_shard_map_agree(tmp_path):
    """The same per-device step under pmap and under jit(shard_map) on 4 fake devices: same training."""
    runs = {}
    for parallel in ("pmap", "shard_map"):
        proc = _run(tmp_path / parallel, 3, 4, "--sync", "--parallel", parallel)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[parallel] = _result(tmp_path / parallel)
    # Same collectives, different compilers' fusion: float32 rounding, 1e-5 relative.
    np.testing.assert_allclose(runs["shard_map"]["losses"], runs["pmap"]["losses"], rtol=1e-5)
    pa, pb = _params(runs["pmap"]), _params(runs["shard_map"])
    diff = np.sqrt(sum(np.sum((pb[k] - pa[k]).astype(np.float64) ** 2) for k in pa))
    norm = np.sqrt(sum(np.sum(pa[k].astype(np.float64) ** 2) for k in pa))
    assert diff / norm <= 1e-5, diff / norm


@pytest.mark.timeout(900)
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    steps = 30  # long enough that the run is still going well after the chosen checkpoint (a step takes ~50 ms)
    reference = _run(tmp_path / "ref", steps, 1)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(workdir), str(steps), "1"], env=_env(1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    kill_after = int(rng.choice([2, 4, 6, 8]))  # a random checkpointed step to die after
    print(f"kill point: after checkpoint {kill_after} (replay: np.random.default_rng({seed}))")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (workdir / "checkpoints" / str(kill_after)).exists():
            time.sleep(rng.uniform(0.0, 0.15))  # somewhere inside the following steps
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (workdir / "result.npz").exists()  # it really died before the end

    resumed = _run(workdir, steps, 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout
    a, b = _params(_result(tmp_path / "ref")), _params(_result(workdir))
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)  # bit-identical


@pytest.mark.timeout(900)
def test_truncated_latest_checkpoint_is_skipped(tmp_path):
    first = _run(tmp_path, 4, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    damaged = 0
    for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
            damaged += 1
    assert damaged
    again = _run(tmp_path, 6, 1)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "checkpoints/4 cannot be restored" in again.stdout
    assert "resuming from step 2" in again.stdout


@pytest.mark.timeout(900)
def test_resume_on_another_device_count(tmp_path):
    """Per-device BatchNorm statistics (4 devices, not synchronised) resume on 2 devices, then on 1: the run goes on
    from the last step (every device from the checkpoint's device-0 statistics, as the note says), and no
    checkpoint is taken for damaged (before, all of them were moved aside and training began again at step 0)."""
    notes = {2: "'batch_stats_per_device' is stored for 4 devices and this run has 2 devices",
             1: "'batch_stats_per_device' is stored for 2 devices and this run keeps none"}
    for devices, steps in ((4, 4), (2, 6), (1, 8)):
        run = _run(tmp_path, steps, devices)
        assert run.returncode == 0, run.stderr[-3000:]
        if devices in notes:
            assert f"resuming from step {steps - 2}" in run.stdout, run.stdout[-3000:]
            assert notes[devices] in run.stdout, run.stdout[-3000:]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert not [name for name in names if "damaged" in name], names
    assert all(np.isfinite(v).all() for v in _params(_result(tmp_path)).values())


@pytest.mark.timeout(600)
def test_nan_stops_the_run_without_a_nan_checkpoint(tmp_path):
    run = _run(tmp_path, 6, 1, "--nan_at", "3", "--ckpt_every", "1")
    assert run.returncode != 0
    assert "NonFiniteLossError" in run.stderr and "at step 3" in run.stderr
    assert (tmp_path / "nonfinite_step3.json").exists()
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2, 3]  # steps 0..2 finished and were saved; the NaN step 3 was not


@pytest.mark.timeout(600)
def test_sigterm_saves_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(tmp_path), "40", "1", "--ckpt_every", "1000"],
                            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.2)  # the first step (and its compilation) is done once a metrics line is written
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 1 <= saved[0] < 40  # saved where it stopped, not at a scheduled step
    assert f"SIGTERM: saved step {saved[0]}; stopping" in stdout


def test_closed_loop_callbacks_of_a_failed_restore_are_silenced(monkeypatch, capsys):
    """After a damaged checkpoint, TensorStore callbacks into Orbax's closed asyncio loop print hundreds of
    'Event loop is closed' tracebacks; the filter drops exactly those and lets every other error through."""
    from grm_jax import checkpoints as ckpt

    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: printed.append(args[1]))
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_value))
    ckpt.silence_closed_loop_callbacks()
    ckpt.silence_closed_loop_callbacks()  # idempotent
    closed, other = RuntimeError("Event loop is closed"), RuntimeError("disk on fire")
    sys.excepthook(RuntimeError, closed, None)
    sys.unraisablehook(types.SimpleNamespace(exc_value=closed))
    sys.excepthook(RuntimeError, other, None)
    assert printed == [other]
