"""Several training processes as one JAX system (``config.train.distributed``), on this machine: 2 processes × 2
fake CPU devices over loopback (gloo collectives), against 1 process × 4 devices.

Every run is a subprocess with a timeout; a run of 2 processes is two subprocesses that find each other through a
coordinator on a free loopback port.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

DRIVER = pathlib.Path(__file__).with_name("train_driver.py")
ROOT = DRIVER.parents[2]
TIMEOUT = 600


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                PYTHONPATH=str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two(workdir, steps, *extra) -> list[subprocess.Popen]:
    """Processes 0 and 1 of a 2 × 2-device run, started; their output goes to workdir/process<i>.log."""
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{_free_port()}"
    procs = []
    for i in range(2):
        log = open(pathlib.Path(workdir) / f"process{i}.log", "a")
        procs.append(subprocess.Popen(
            [sys.executable, str(DRIVER), str(workdir), str(steps), "2", "--coordinator", address,
             "--num_processes", "2", "--process_id", str(i), *extra], env=_env(2), stdout=log, stderr=log))
    return procs


def _wait(procs, timeout=TIMEOUT) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.time(), 1)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    return codes


def _log(workdir, i) -> str:
    return (pathlib.Path(workdir) / f"process{i}.log").read_text()


def _run_two(workdir, steps, *extra) -> list[int]:
    return _wait(_start_two(workdir, steps, *extra))


def _run_one(workdir, steps, devices, *extra):
    return subprocess.run([sys.executable, str(DRIVER), str(workdir), str(steps), str(devices), *extra],
                          env=_env(devices), capture_output=True, text=True, timeout=TIMEOUT)


def _params(workdir) -> dict:
    result = np.load(pathlib.Path(workdir) / "result.npz")
    return {k: result[k] for k in result.files if k.startswith("p:")}


def _relative(a: dict, b: dict) -> float:
    """‖b − a‖ / ‖a‖ over all parameters as one vector."""
    diff = np.sqrt(sum(np.sum((b[k] - a[k]).astype(np.float64) ** 2) for k in a))
    return float(diff / np.sqrt(sum(np.sum(a[k].astype(np.float64) ** 2) for k in a)))


@pytest.mark.timeout(2 * TIMEOUT)
def test_two_processes_train_as_one_process_with_four_devices(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    assert _run_two(two, 4) == [0, 0], _log(two, 0)[-3000:] + _log(two, 1)[-3000:]
    single = _run_one(one, 4, 4)
    assert single.returncode == 0, single.stderr[-3000:]
    # Same global batches, same per-sample Gumbel noise, BatchNorm statistics per device as in the official DDP
    # run; the gradient mean runs over gloo instead of one process's devices: float32 rounding, 1e-5 relative
    # (measured 7e-7).
    a, b = np.load(one / "result.npz"), np.load(two / "result.npz")
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
    assert _relative(_params(one), _params(two)) <= 1e-5
    # Per-host data: each process fed its own rows of every global batch, and together exactly the 1-process ones.
    fed = [np.load(two / f"samples_{i}.npy") for i in range(2)]
    reference = np.load(one / "samples_0.npy")  # (steps, 4 devices, 1)
    for step in range(4):
        assert not set(fed[0][step].ravel()) & set(fed[1][step].ravel())
        np.testing.assert_array_equal(np.concatenate([fed[0][step], fed[1][step]]), reference[step])
    # Logs and TensorBoard are written by process 0 only: one line per step.
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 4


@pytest.mark.timeout(2 * TIMEOUT)
def test_shard_map_runner_on_two_processes(tmp_path):
    """The jit + shard_map runner over the global mesh (synchronised BatchNorm) gives the 1 × 4 training too."""
    two, one = tmp_path / "two", tmp_path / "one"
    assert _run_two(two, 3, "--parallel", "shard_map", "--sync") == [0, 0], _log(two, 0)[-3000:]
    single = _run_one(one, 3, 4, "--parallel", "shard_map", "--sync")
    assert single.returncode == 0, single.stderr[-3000:]
    np.testing.assert_allclose(np.load(two / "result.npz")["losses"], np.load(one / "result.npz")["losses"],
                               rtol=1e-5)
    assert _relative(_params(one), _params(two)) <= 1e-5  # float32 rounding (measured 1.4e-6)


@pytest.mark.timeout(4 * TIMEOUT)
def test_sigkill_of_one_process_then_restart_resumes_exactly(tmp_path):
    steps = 8
    reference = tmp_path / "reference"
    assert _run_two(reference, steps) == [0, 0], _log(reference, 0)[-3000:]

    workdir = tmp_path / "killed"
    procs = _start_two(workdir, steps)
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    kill_after = int(rng.choice([2, 4]))  # a checkpointed step to die after (checkpoints every 2 steps)
    print(f"kill point: process 1 after checkpoint {kill_after} (replay: np.random.default_rng({seed}))")
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and procs[1].poll() is None:
        if (workdir / "checkpoints" / str(kill_after)).exists():
            time.sleep(rng.uniform(0.0, 0.3))
            break
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait(timeout=60)
    try:  # the survivor stops on its own once the coordination service sees its peer gone; else the scheduler would
        procs[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait(timeout=60)
    assert not (workdir / "result.npz").exists()  # the run really died before its end

    assert _run_two(workdir, steps) == [0, 0], _log(workdir, 0)[-3000:] + _log(workdir, 1)[-3000:]
    assert "resuming from step" in _log(workdir, 0)
    a, b = _params(reference), _params(workdir)
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)  # bit-identical to the uninterrupted run

    # The same 2-process checkpoint restarts on 1 process × 4 devices, and trains on.
    single = _run_one(workdir, steps + 2, 4)
    assert single.returncode == 0, single.stderr[-3000:]
    assert f"resuming from step {steps}" in single.stdout


@pytest.mark.timeout(2 * TIMEOUT)
def test_nan_stops_every_process_without_a_checkpoint_of_it(tmp_path):
    codes = _run_two(tmp_path, 6, "--nan_at", "3", "--ckpt_every", "1")
    assert codes[0] != 0 and codes[1] != 0
    for i in range(2):
        assert "NonFiniteLossError: loss is nan at step 3" in _log(tmp_path, i), _log(tmp_path, i)[-3000:]
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1, 2, 3]  # steps 0..2 were saved; nothing from step 3 on


def _start_entry_point(script, workdir, i, address, *args) -> subprocess.Popen:
    log = open(pathlib.Path(workdir) / f"{script}.process{i}.log", "w")
    flags = ["--config.train.distributed=True", f"--config.train.coordinator_address={address}",
             "--config.train.num_processes=2", f"--config.train.process_id={i}"]
    return subprocess.Popen([sys.executable, script, *args, *flags], cwd=ROOT, env=_env(2), stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.mark.timeout(2 * TIMEOUT)
def test_train_py_and_eval_py_on_two_processes(tmp_path):
    """The user's commands on 2 hosts: train.py trains and evaluates, eval.py splits the sequences."""
    data = [f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.synthetic.num_train=4",
            "--config.data.synthetic.num_val=3", "--config.data.synthetic.max_length=60"]
    run = tmp_path / "run"
    run.mkdir()
    address = f"127.0.0.1:{_free_port()}"
    train = [_start_entry_point("train.py", run, i, address, "--workdir", str(run), "--config.train.batch_size=2",
                                "--config.train.epochs=1", "--config.data.sample_per_epoch=32",
                                "--config.train.log_every_steps=2", "--config.eval.baselines=False", *data)
             for i in range(2)]
    logs = lambda name: "".join((run / f"{name}.process{i}.log").read_text()[-3000:] for i in range(2))
    assert _wait(train) == [0, 0], logs("train.py")
    assert (run / "checkpoints" / "4").is_dir()  # 32 samples / (2 per device × 4 devices) = 4 steps
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # written once, by process 0
    assert len(list((run / "results" / "synthetic").glob("synthetic-*.txt"))) == 3
    assert "synthetic: AUC" in (run / "train.py.process0.log").read_text()

    out = tmp_path / "eval"
    address = f"127.0.0.1:{_free_port()}"
    evals = [_start_entry_point("eval.py", run, i, address, "--checkpoint", str(run), "--results_dir", str(out),
                                *data) for i in range(2)]
    assert _wait(evals) == [0, 0], logs("eval.py")
    assert len(list(out.glob("synthetic-*.txt"))) == 3 and (out / "report_synthetic.md").is_file()
    assert "process 1 tracked 1 sequences" in (run / "eval.py.process1.log").read_text()  # of 3: 0 and 2 on process 0
    assert "synthetic (threshold" in (run / "eval.py.process0.log").read_text()
