"""The training loop around the step: does the host wait for the devices, and what do several processes cost?

    python benchmarks/train_loop.py                         # both parts, tiny GRM, 2-core CPU: ~3 min
    python benchmarks/train_loop.py --part overlap --delay 0.05,0.1
    python benchmarks/train_loop.py --part processes --steps 20

``overlap``: ``grm_jax.train.loop.train`` (what ``train.py`` runs) on one device, fed by an input pipeline that
takes ``delay`` seconds per batch without using the CPU (a sleep: a slow disk or a remote reader), against the
same loop fed instantly. A loop that waits for each step before reading the next batch takes step + delay per
step; one that reads the next batch while the step runs takes max(step, delay). The table gives both sums and
the measured time, and ``hidden`` = (step + delay − measured) / min(step, delay): 0 when the host waits for
each step, 1 when the slower of the two hides the other completely.

``processes``: the same training (tiny GRM, global batch 8, DropPath off) as 1 process × 4 devices and as
2 processes × 2 devices over loopback (gloo collectives), each in fresh subprocesses; steps/s from the loop's own
``samples_per_s`` log after the compiled first window.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import flags  # noqa: E402

from grm_jax import cli  # noqa: E402


def _batches(delay: float, batch: int):
    """A factory of endless batches of the tiny GRM's shapes, each ``delay`` seconds late (sleeping)."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = dict(template=rng.normal(size=(1, batch, 64, 64, 3)).astype(np.float32),
                search=rng.normal(size=(1, batch, 128, 128, 3)).astype(np.float32),
                template_mask=np.ones((1, batch, 16), np.float32),
                search_anno=np.tile(np.float32([0.3, 0.3, 0.25, 0.3]), (1, batch, 1)))

    def make(start):
        del start
        while True:
            if delay:
                time.sleep(delay)
            yield {k: v.copy() for k, v in data.items()}

    return make


def overlap(delays: list[float], steps: int, batch: int) -> list[dict]:
    import jax

    from grm_jax.config import load_config_file
    from grm_jax.train.loop import train

    def run(delay: float) -> float:
        config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
        config.model.drop_path_rate = 0.0
        config.train.batch_size = batch
        config.train.max_steps = steps + 5
        config.train.log_every_steps = 5  # the first window holds the compilation; the rest are timed
        config.train.checkpoint_every_steps = 10**6  # one save, at the end
        config.data.sample_per_epoch = 10**6
        with tempfile.TemporaryDirectory() as workdir:
            result = train(config, workdir, _batches(delay, batch), devices=jax.local_devices()[:1], progress=False)
        timed = result.history[1:]
        return sum(5 * batch / r["samples_per_s"] for r in timed) / (5 * len(timed))  # seconds per step

    step = run(0.0)
    rows = []
    for delay in delays:
        measured = run(delay)
        hidden = (step + delay - measured) / min(step, delay)
        rows.append(dict(delay_ms=1e3 * delay, step_ms=1e3 * step, serial_ms=1e3 * (step + delay),
                         overlapped_ms=1e3 * max(step, delay), measured_ms=1e3 * measured, hidden=hidden))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(steps: int) -> list[dict]:
    driver = ROOT / "tests" / "train" / "train_driver.py"
    env = lambda devices: dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def steps_per_s(workdir: pathlib.Path) -> float:
            records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
            timed = records[5:]  # per-step logs; the first 5 include the compilation
            return sum(r["samples_per_s"] for r in timed) / len(timed) / 4  # global batch 4 per step

        one = pathlib.Path(tmp) / "one"
        start = time.perf_counter()
        subprocess.run([sys.executable, str(driver), str(one), str(steps), "4", "--ckpt_every", "1000000"],
                       env=env(4), check=True, capture_output=True, timeout=900)
        rows.append(dict(layout="1 process × 4 devices", steps_per_s=steps_per_s(one),
                         wall_s=time.perf_counter() - start))
        two = pathlib.Path(tmp) / "two"
        address = f"127.0.0.1:{_free_port()}"
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, str(driver), str(two), str(steps), "2", "--ckpt_every", "1000000",
                                   "--coordinator", address, "--num_processes", "2", "--process_id", str(i)],
                                  env=env(2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(2)]
        if any(p.wait(timeout=900) for p in procs):
            raise RuntimeError("the 2-process run failed (rerun tests/train/test_multiprocess.py for its logs)")
        rows.append(dict(layout="2 processes × 2 devices", steps_per_s=steps_per_s(two),
                         wall_s=time.perf_counter() - start))
    return rows


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_enum("part", "all", ["overlap", "processes", "all"], "which measurement", flag_values=fv)
    flags.DEFINE_string("delay", "0.05,0.1", "input delays to try, seconds per batch", flag_values=fv)
    flags.DEFINE_integer("steps", 20, "timed steps per run", flag_values=fv)
    flags.DEFINE_integer("batch", 4, "batch size", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows as JSON to this path", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Measures the input overlap and the process layouts (``--part``)."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)
    out = {}
    if args.part in ("overlap", "all"):
        rows = out["overlap"] = overlap([float(d) for d in args.delay.split(",")], args.steps, args.batch)
        print(f"overlap (tiny GRM, batch {args.batch}, 1 device)\n")
        print("| input delay ms | step ms | step + delay ms | max(step, delay) ms | measured ms/step | hidden |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['delay_ms']:.0f} | {r['step_ms']:.1f} | {r['serial_ms']:.1f} | {r['overlapped_ms']:.1f} | "
                  f"{r['measured_ms']:.1f} | {r['hidden']:.2f} |", flush=True)
    if args.part in ("processes", "all"):
        rows = out["processes"] = processes(args.steps)
        print("\nprocesses (tiny GRM, global batch 4, pmap, per-step logs)\n")
        print("| layout | steps/s | wall s (incl. start and compile) |")
        print("|---|---:|---:|")
        for r in rows:
            print(f"| {r['layout']} | {r['steps_per_s']:.2f} | {r['wall_s']:.0f} |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/train_loop.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
