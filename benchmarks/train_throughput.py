"""Samples/s and peak memory of the GRM train step (per-device step under pmap, synthetic batches in memory).

    python benchmarks/train_throughput.py                       # tiny at batch 2, 8, 32
    python benchmarks/train_throughput.py --configs tiny,B/256 --batches 1,2 --steps 3

Prints a Markdown table: config, per-device batch, devices, remat, compile seconds, step ms (median), samples/s,
the process's peak resident memory so far (CPU; it only grows from row to row) or the device's peak bytes in use
(GPU/TPU, from memory_stats()), the compiled step's temporary buffers (XLA's memory analysis: the activations
kept for the backward pass and workspace) and, from the previous row of the same config, what one more sample per
device adds to them. ``--remat none,block`` compares ``config.train.remat`` settings.

``GFLOP/s`` = 3 × the official forward's FLOPs per sample (2·MAC of every matmul and convolution, counted from the
traced program plus the predictor's target half the port computes once per sample, grm_jax/flops.py; 65.58 GFLOP
for ViT-B/256; the backward pass does two matmuls per forward matmul) × samples/s; ``matmul GF/s`` = a
``--matmul-size``² matmul in the row's precision (forward.py's ``reference_timer`` with ``mode='case'``: bfloat16
operands for bfloat16 rows), timed after every timed step (median of 3 calls each time) and the median of those
samples taken, so that the step and its reference share the machine's conditions (a shared 2-core VM's speed drifts
by tens of percent within a minute); ``% matmul`` = GFLOP/s over that (the issue's target for the train step is
≥ 80 %); ``% matmul per step`` = each timed step's rate over the sample taken right after it: their median, and
their range in brackets.
``--matmuls-alone`` adds two columns: ``matmuls alone ms``, every ``dot_general`` and convolution of the traced step
(forward, backward and the division MLPs) jitted and timed alone on its own operands, summed over the step
(median of 5 each), and ``% ceiling``, the ``% matmul`` the step would reach if nothing but those matmuls ran, each
at its own speed: the bound this machine's matmul library puts on ``% matmul`` at these shapes.
``--dtype`` as in forward.py: ``float32`` (highest matmul precision), ``tf32`` (the backend's default precision),
``bfloat16``. Training always takes the masked attention path (the division MLP learns through the float mask), so
there is no fused variant to time. ``--json PATH`` also writes the rows.
The step is compiled as ``train.py`` compiles it, with XLA's CPU scheduler set for memory
(``grm_jax/xla_flags.py``); ``XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED`` measures
XLA's default.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from forward import model_dtype, precision_scope, reference_timer, timed  # noqa: E402

from grm_jax import cli, memory, xla_flags  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.flops import iter_eqns, official_forward_flops  # noqa: E402
from grm_jax.models import build_model, example_inputs  # noqa: E402
from grm_jax.train.loop import init_train_state  # noqa: E402
from grm_jax.train.optimizer import make_optimizer  # noqa: E402
from grm_jax.train.parallel import PmapRunner  # noqa: E402
from grm_jax.train.step import make_train_step  # noqa: E402


def peak_memory_mb() -> float:
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def compiled_temp_mb(runner, state, data, key) -> float:
    """The step program's temporary buffers (activations kept for the backward pass, workspace), from XLA's memory
    analysis of the compiled program: what the batch adds per device, independent of the allocator."""
    analysis = runner.step_fn.lower(state, data, key).compile().memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", float("nan")) / 2**20


def matmul_equations(fn, *args) -> list[tuple]:
    """(equation, how many times it occurs) for each distinct ``dot_general`` / ``conv_general_dilated`` of
    ``fn(*args)``'s jaxpr, nested jaxprs included (distinct: operand shapes, dtypes or parameters differ)."""
    found = {}
    for eqn in iter_eqns(jax.make_jaxpr(fn)(*args).jaxpr):
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            key = (eqn.primitive.name, tuple((v.aval.shape, str(v.aval.dtype)) for v in eqn.invars),
                   repr(sorted(eqn.params.items(), key=lambda kv: kv[0])))
            found[key] = (eqn, found.get(key, (None, 0))[1] + 1)
    return list(found.values())


def matmuls_alone_ms(fn, *args, iters: int = 5, repeat: int = 8) -> float:
    """Σ over the ``dot_general`` and ``conv_general_dilated`` equations of ``fn(*args)``'s jaxpr of the time of that
    one equation alone: ``repeat`` copies of it on as many sets of random operands of its shapes, jitted as one
    program (so the per-call dispatch is paid once per ``repeat`` matmuls), median of ``iters`` calls divided by
    ``repeat``; identical equations are timed once."""
    rng = np.random.default_rng(0)
    total = 0.0
    for eqn, count in matmul_equations(fn, *args):
        operands = [[jax.device_put(rng.normal(size=v.aval.shape).astype(v.aval.dtype)) for v in eqn.invars]
                    for _ in range(repeat)]
        call = jax.jit(lambda *sets, eqn=eqn: [eqn.primitive.bind(*xs, **eqn.params) for xs in sets])
        total += count * float(np.median(timed(call, *operands, warmup=1, iters=iters))) / repeat
    return 1e3 * total


def synthetic_batch(config, devices: int, batch: int) -> dict:
    """A host batch of pmap's shape (devices, batch, ...): normal noise images, every template cell on, one box."""
    m = config.model
    rng = np.random.default_rng(0)
    grid = (m.template_size // m.patch_size) ** 2
    return dict(template=rng.normal(size=(devices, batch, m.template_size, m.template_size, 3)).astype(np.float32),
                search=rng.normal(size=(devices, batch, m.search_size, m.search_size, 3)).astype(np.float32),
                template_mask=np.ones((devices, batch, grid), np.float32),
                search_anno=np.tile(np.float32([0.3, 0.3, 0.25, 0.3]), (devices, batch, 1)))


REFERENCE_ITERS = 3  # reference matmul calls after each timed step (their median is one sample)


def measure(name: str, batch: int, steps: int, dtype: str, remat: str = "none", alone: bool = False,
            reference=None) -> dict:
    """One row: the step's time and memory; with ``reference`` (a forward.py ``matmul_timer``), a sample of the
    reference matmul's GF/s after every timed step (``reference_samples``) and the step's shares of it
    (:func:`matmul_shares`)."""
    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:{name}")
    config.model.dtype = model_dtype(dtype)
    config.train.batch_size = batch
    config.train.remat = remat
    n = jax.local_device_count()
    model = build_model(config)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 100))
    gflop = forward_gflop(model, config, state)
    optimizer = make_optimizer(config, state.params, 100)
    runner = PmapRunner(model, optimizer, config, 100, jax.local_devices())  # train.py's pmap path
    state, key = runner.place_state(state), runner.place_key(jax.random.PRNGKey(0))
    memory.release_free_memory()  # as train.py does once the state is placed (grm_jax/memory.py)
    data = synthetic_batch(config, n, batch)
    temp_mb = compiled_temp_mb(runner, state, data, key)
    start = time.perf_counter()
    state, metrics = runner(state, data, key)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    memory.release_free_memory()  # as train.py does after the first (compiling) step
    times, reference_samples = [], []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = runner(state, data, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        if reference is not None:
            reference_samples.append(reference(REFERENCE_ITERS))
    median = float(np.median(times))
    samples_s = batch * n / median
    row = dict(config=name, batch=batch, devices=n, dtype=dtype, remat=remat, compile_s=compile_s,
               step_ms=1e3 * median, samples_s=samples_s, peak_mb=peak_memory_mb(), temp_mb=temp_mb,
               gflops=3 * gflop * samples_s, step_times_ms=[1e3 * t for t in times],
               reference_samples=reference_samples)
    if reference is not None:
        row.update(matmul_shares(3 * gflop * batch * n, times, reference_samples))
    if alone:
        one_device = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), (state, data))
        del state, runner
        step = make_train_step(model, optimizer, config, 100, axis_name=None)
        row["alone_ms"] = matmuls_alone_ms(step, *one_device, jax.random.PRNGKey(0))
    return row


def matmul_shares(gflop_per_step: float, step_times_s: list[float], reference_samples: list[float]) -> dict:
    """The step's rate as a share of the reference matmul's (module docstring).

    matmul_gflops = median of the samples; pct_matmul = 100 · (gflop_per_step / median step time) / matmul_gflops;
    pct_matmul_steps[k] = 100 · (gflop_per_step / step_times_s[k]) / reference_samples[k], the sample taken right
    after step k.
    """
    reference = float(np.median(reference_samples))
    return dict(matmul_gflops=reference,
                pct_matmul=100 * gflop_per_step / float(np.median(step_times_s)) / reference,
                pct_matmul_steps=[100 * gflop_per_step / t / mm for t, mm in zip(step_times_s, reference_samples)])


def forward_gflop(model, config, state) -> float:
    """GFLOP of one sample's official forward (2·MAC of the matmuls and convolutions): counted from the traced
    program, plus the predictor's target half that the official model computes per token and the port per sample
    (``grm_jax.flops.official_forward_flops``), so that the rate is the official model's work per second."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return official_forward_flops(model, variables, *example_inputs(config, 1)) / 1e9


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("configs", "tiny", "configs/grm.py variants, comma-separated", flag_values=fv)
    flags.DEFINE_string("batches", "2,8,32", "batch sizes per device, comma-separated", flag_values=fv)
    flags.DEFINE_integer("steps", 5, "timed steps after the compiling one", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("dtype", "float32", ["float32", "tf32", "bfloat16"], "compute precision", flag_values=fv)
    flags.DEFINE_string("remat", "none", "comma list of config.train.remat values: none, block", flag_values=fv)
    flags.DEFINE_integer("matmul-size", 2048, "size of the reference matmul", flag_values=fv)
    flags.DEFINE_bool("matmuls-alone", False, "also time the step's matmuls one by one (the ceiling columns)",
                      flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows as JSON to this path", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Prints the training step's time and memory per config, remat and batch size."""
    xla_flags.prefer_memory_scheduler()  # as train.py does, before JAX starts (unless $XLA_FLAGS names the option)
    cli.no_arguments(argv)
    args = cli.namespace(fv)
    rows = []
    print(f"devices: {jax.devices()}; XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}\n")
    print("| config | batch/device | devices | dtype | remat | compile s | step ms | samples/s | GFLOP/s | "
          "matmul GF/s | % matmul | % matmul per step | peak MB | temp MB | temp MB per added sample |"
          + (" matmuls alone ms | % ceiling |" if args.matmuls_alone else ""))
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
          + ("---:|---:|" if args.matmuls_alone else ""))
    for name in args.configs.split(","):
        for remat in args.remat.split(","):
            previous = None
            for batch in (int(b) for b in args.batches.split(",")):
                timer = reference_timer(args.matmul_size, args.dtype, mode="case")
                timer(1, warmup=2)
                with precision_scope(args.dtype):
                    r = measure(name, batch, args.steps, args.dtype, remat, args.matmuls_alone, timer)
                reference, per_step = r["matmul_gflops"], r["pct_matmul_steps"]
                r["temp_mb_per_sample"] = (float("nan") if previous is None else
                                           (r["temp_mb"] - previous["temp_mb"]) / (batch - previous["batch"]))
                previous = r
                rows.append(r)
                ceiling = ""
                if args.matmuls_alone:
                    r["pct_ceiling"] = 100 * r["gflops"] * r["step_ms"] / r["alone_ms"] / reference
                    ceiling = f" {r['alone_ms']:.0f} | {r['pct_ceiling']:.0f} |"
                print(f"| {r['config']} | {r['batch']} | {r['devices']} | {r['dtype']} | {remat} | "
                      f"{r['compile_s']:.1f} | {r['step_ms']:.0f} | {r['samples_s']:.1f} | {r['gflops']:.1f} | "
                      f"{reference:.1f} | {r['pct_matmul']:.0f} | {np.median(per_step):.0f} ({min(per_step):.0f}–"
                      f"{max(per_step):.0f}) | {r['peak_mb']:.0f} | "
                      f"{r['temp_mb']:.0f} | {r['temp_mb_per_sample']:.0f} |{ceiling}", flush=True)

    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(rows=rows), indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/train_throughput.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
