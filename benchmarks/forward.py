"""Latency and GFLOP/s of one GRM forward (inference, jit), next to a large matmul measured in the same process.

    python benchmarks/forward.py                   # GRM-B/256 and the tiny GRM, batch 1: masked/fused x f32/bf16
    python benchmarks/forward.py --batch8          # ... and batch 8
    python benchmarks/forward.py --large           # ... and GRM-L/320 (slow on 2 cores, more so with --batch8)
    python benchmarks/forward.py --accuracy        # + deviation of each variant from masked float32
    python benchmarks/forward.py --profile         # + time per op (XLA CPU profiler) of every case
    python benchmarks/forward.py --configs B/256 --attention masked --dtypes float32 --iters 20

Per case (config, batch, attention, dtype): random-init weights (float32 parameters, the same for every variant of
a config) and random inputs; ``compile s`` = trace + lower + XLA compile, ``first call s`` = that plus the first
execution (what the first tracked frame waits); then ``--warmup`` untimed calls and ``--iters`` timed ones
(median and min). GFLOP per forward: the official model's measured 65.58 (ViT-B/256) and 324.64 (ViT-L/320) per image
(docs/model.md#configurations), 2·MAC of the matmuls and convolutions; for other configs the same count made from the
program (every ``dot_general`` and ``conv_general_dilated`` of the jaxpr), printed beside the official figure (``spec``
in the output) for a cross-check. ``matmul GF/s``: a float32 ``--matmul-size``² matmul timed right before the case
(median of 10), the machine's practical limit; ``% matmul`` = model GF/s / that. ``others`` = CPU cores used by other
processes while the case ran (from /proc/stat minus this process's CPU time): on a shared machine, rows with others ≫ 0
are slowed by them.
The division threshold is passed as an array (one program for every threshold), as the tracker does. bfloat16
rows get their kernels cast once (``inference_variables``; ``--keep-float32-kernels`` to cast in every call).

dtypes: ``float32`` = float32 with the matmul precision set to ``highest`` (full float32 products, what parity
needs); ``tf32`` = float32 at the backend's default precision (TF32 tensor cores on an NVIDIA GPU since Ampere;
on a CPU the same program as ``float32``); ``bfloat16`` = bfloat16 operands, float32 accumulation.
``--matmul-reference case`` times the reference matmul in each row's own precision (bfloat16 rows: bfloat16
operands), instead of float32 for every row. ``--json PATH`` also writes the rows as JSON.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import re
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from grm_jax import cli  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.flops import official_forward_flops  # noqa: E402
from grm_jax.models import build_model, example_inputs, host_init  # noqa: E402
from grm_jax.models.grm import inference_variables  # noqa: E402

SPEC_GFLOP = {"B/256": 65.58, "L/320": 324.64}  # per image, measured on the official model
# (docs/model.md#configurations)


# ------------------------------------------------------------------------------------------------ measuring


class OtherLoad:
    """Average number of cores busy with other processes between ``start()`` and ``stop()`` (Linux)."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy_jiffies():
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]) - idle

    def start(self):
        self.t0, self.b0, self.c0 = time.perf_counter(), self._busy_jiffies(), sum(os.times()[:2])

    def stop(self) -> float:
        busy = self._busy_jiffies()
        if busy is None or self.b0 is None:
            return float("nan")
        wall = time.perf_counter() - self.t0
        mine = sum(os.times()[:2]) - self.c0
        return max((busy - self.b0) / self.hz - mine, 0.0) / wall

    def wait_quiet(self, timeout_s: float, threshold: float = 0.25) -> float:
        """Sleep until other processes use < ``threshold`` cores (1-s samples) or ``timeout_s`` passed."""
        deadline = time.perf_counter() + timeout_s
        while True:
            self.start()
            time.sleep(1.0)
            others = self.stop()
            if not others >= threshold or time.perf_counter() > deadline:
                return others


def timed(fn, *args, warmup: int, iters: int) -> np.ndarray:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def precision_scope(dtype: str):
    """Matmul precision of a row's dtype: ``float32`` → ``highest`` (exact float32 products); ``tf32`` and
    ``bfloat16`` → the backend's default (TF32 for float32 operands on NVIDIA GPUs)."""
    return jax.default_matmul_precision("highest") if dtype == "float32" else contextlib.nullcontext()


def model_dtype(dtype: str) -> str:
    """The model's ``config.model.dtype`` for a row's dtype (``tf32`` is a float32 model)."""
    return "float32" if dtype == "tf32" else dtype


def matmul_timer(size: int, dtype=jnp.float32, precision: str = "float32"):
    """A function ``rate(iters, warmup=0)``: GFLOP/s of a size×size @ size×size matmul (float32 result), median of
    ``iters`` calls of the program compiled once here; ``precision`` as a row's dtype (``float32``: highest,
    ``tf32``: backend default). Called between the steps of a measurement, it samples the machine's matmul speed
    under the same conditions as the steps."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(size, size)), dtype) for _ in range(2))
    with precision_scope(precision):
        fn = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32)).lower(a, b).compile()
    return lambda iters, warmup=0: 2 * size ** 3 / np.median(timed(fn, a, b, warmup=warmup, iters=iters)) / 1e9


def matmul_gflops(size: int, dtype=jnp.float32, iters: int = 10, precision: str = "float32") -> float:
    """GFLOP/s of a size×size @ size×size matmul (float32 result), median of ``iters`` (:func:`matmul_timer`)."""
    return matmul_timer(size, dtype, precision)(iters, warmup=2)


def reference_timer(size: int, dtype: str, mode: str):
    """:func:`matmul_timer` of a row's reference matmul: float32 (default precision) for every row
    (``mode='float32'``), or the row's own precision (``mode='case'``: bfloat16 operands for bfloat16 rows)."""
    if mode == "float32":
        return matmul_timer(size, precision="tf32")
    return matmul_timer(size, jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, precision=dtype)


def reference_gflops(size: int, dtype: str, mode: str) -> float:
    """GFLOP/s of a row's reference matmul (:func:`reference_timer`), median of 10 calls."""
    return reference_timer(size, dtype, mode)(10, warmup=2)


def profile_ops(fn, *args, iters: int = 3, top: int = 25) -> list[tuple[float, int, str, str]]:
    """Time per op (ms per call, summed over the program's instances) from the XLA CPU profiler, grouped by the
    op's source name with block indices folded (``blocks_*``). Uses JAX's profile reader (private API)."""
    import glob
    import tempfile

    from jax._src.lib import _profile_data

    compiled = fn.lower(*args).compile()
    names = {}
    text = compiled.as_text()
    for line in text[text.index("ENTRY"):].splitlines():
        m = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name="([^"]*)"', line)
        if m:
            op = re.sub(r"blocks_\d+", "blocks_*", m.group(3))
            op = re.sub(r"^jit\([^)]*\)/", "", op)
            names[m.group(1)] = (op, m.group(2).split("{")[0])
    jax.block_until_ready(compiled(*args))
    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir):
        for _ in range(iters):
            jax.block_until_ready(compiled(*args))
    data = _profile_data.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
    total, count = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if event.name in names:
                    total[names[event.name]] += event.duration_ns
                    count[names[event.name]] += 1
    return [(ns / iters / 1e6, count[key] // iters, key[1], key[0]) for key, ns in total.most_common(top)]


# ------------------------------------------------------------------------------------------------ cases


def setup(name: str, batch: int, seed: int = 0):
    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:{name}")
    model = build_model(config)
    z, x = example_inputs(config, batch)
    rng = np.random.default_rng(seed + batch)
    z = jnp.asarray(rng.normal(size=z.shape), jnp.float32)
    x = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    return config, model, z, x


def run_case(config, variables, z, x, attention, dtype, args, load):
    config.model.attention = attention
    config.model.dtype = model_dtype(dtype)
    model = build_model(config)
    if not args.keep_float32_kernels:  # bfloat16 kernels cast once (bit-identical outputs)
        variables = inference_variables(variables, config.model.dtype)
    threshold = jnp.float32(args.threshold)
    forward = jax.jit(lambda v, z, x, t: model.apply(v, z, x, threshold=t))
    load.start()
    start = time.perf_counter()
    with precision_scope(dtype):
        compiled = forward.lower(variables, z, x, threshold).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(variables, z, x, threshold))
    first_s = time.perf_counter() - start
    times = timed(compiled, variables, z, x, threshold, warmup=args.warmup, iters=args.iters)
    others = load.stop()
    profile = profile_ops(forward, variables, z, x, threshold) if args.profile else None
    return dict(compile_s=compile_s, first_s=first_s, median_ms=1e3 * np.median(times), min_ms=1e3 * times.min(),
                others=others, out=jax.device_get(out), profile=profile)


def deviation(out, ref, search_size) -> dict:
    flips = np.argmax(out["decisions"], -1) != np.argmax(ref["decisions"], -1)
    return dict(d_score=float(np.abs(out["score_map"] - ref["score_map"]).max()),
                d_box_px=float(np.abs(out["pred_boxes"] - ref["pred_boxes"]).max() * search_size),
                flips=f"{int(flips.sum())}/{flips.size}")


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("configs", "B/256,tiny", "configs/grm.py variants, comma-separated", flag_values=fv)
    flags.DEFINE_string("batches", "1", "batch sizes, comma-separated", flag_values=fv)
    flags.DEFINE_bool("batch8", False, "add batch 8", flag_values=fv)
    flags.DEFINE_bool("large", False, "add L/320", flag_values=fv)
    flags.DEFINE_string("attention", "masked,fused", "attention paths, comma-separated", flag_values=fv)
    flags.DEFINE_string("dtypes", "float32,bfloat16", "of float32 (highest precision), tf32 (float32 at the "
                        "backend's default precision), bfloat16", flag_values=fv)
    flags.DEFINE_integer("iters", 10, "timed calls per case (median reported)", flag_values=fv)
    flags.DEFINE_integer("warmup", 3, "untimed calls first", flag_values=fv)
    flags.DEFINE_float("threshold", 0.0, "division threshold", flag_values=fv)
    flags.DEFINE_integer("matmul-size", 2048, "size of the reference matmul", flag_values=fv)
    flags.DEFINE_enum("matmul-reference", "float32", ["float32", "case"], "reference matmul: float32 for every row, "
                      "or each row's own precision", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows (and the FLOP counts) as JSON to this path",
                        flag_values=fv)
    flags.DEFINE_bool("accuracy", False, "deviation of each variant from masked float32", flag_values=fv)
    flags.DEFINE_bool("profile", False, "time per op of every case", flag_values=fv)
    flags.DEFINE_bool("keep-float32-kernels", False, "bfloat16 rows: pass float32 kernels (cast inside every call) "
                      "instead of grm_jax.models.grm.inference_variables' bfloat16 ones", flag_values=fv)
    flags.DEFINE_float("wait-quiet", 0.0, "before each case, wait up to S seconds for other processes to use < 0.25 "
                       "cores", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Times the forward pass per config, batch, attention path and precision."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)
    if args.iters < 10:
        print(f"note: --iters {args.iters} < 10")

    configs = args.configs.split(",") + (["L/320"] if args.large else [])
    batches = [int(b) for b in args.batches.split(",")] + ([8] if args.batch8 else [])
    variants = [(a, d) for a in args.attention.split(",") for d in args.dtypes.split(",")]
    if args.accuracy and variants[0] != ("masked", "float32"):
        variants = [("masked", "float32")] + [v for v in variants if v != ("masked", "float32")]

    print(f"jax {jax.__version__}, devices {jax.devices()}, {os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    load = OtherLoad()
    print(f"matmul {args.matmul_size}²: float32 (highest) {matmul_gflops(args.matmul_size):.1f} GF/s, "
          f"float32 (default) {matmul_gflops(args.matmul_size, precision='tf32'):.1f} GF/s, "
          f"bfloat16 (float32 accumulation) {matmul_gflops(args.matmul_size, jnp.bfloat16):.1f} GF/s\n")

    rows, flop_lines = [], []
    for name in configs:
        config, model, z1, x1 = setup(name, 1)
        variables = jax.device_put(host_init(model, z1, x1))
        counted = official_forward_flops(model, variables, z1, x1) / 1e9
        cost = jax.jit(model.apply).lower(variables, z1, x1).cost_analysis()  # of the HLO: no compile
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        gflop = SPEC_GFLOP.get(name, counted)
        flop_lines.append(f"{name}: {counted:.2f} GFLOP counted (2·MAC matmul+conv, B=1, official predictor), spec "
                          f"{SPEC_GFLOP.get(name, '–')}, XLA cost_analysis (all ops) "
                          f"{cost.get('flops', 0) / 1e9:.2f}")
        for batch in batches:
            _, _, z, x = setup(name, batch)
            reference = None
            for attention, dtype in variants:
                if args.wait_quiet:
                    load.wait_quiet(args.wait_quiet)
                mm = reference_gflops(args.matmul_size, dtype, args.matmul_reference)
                r = run_case(config, variables, z, x, attention, dtype, args, load)
                gfs = gflop * batch / (r["median_ms"] / 1e3)
                row = dict(config=name, batch=batch, attention=attention, dtype=dtype, compile_s=r["compile_s"],
                           first_s=r["first_s"], median_ms=r["median_ms"], min_ms=r["min_ms"],
                           gflop=gflop * batch, gfs=gfs, mm=mm, pct=100 * gfs / mm, others=r["others"])
                if args.accuracy:
                    if reference is None:
                        reference = r["out"]
                    row.update(deviation(r["out"], reference, config.model.search_size))
                rows.append(row)
                print(f"  {name} B={batch} {attention}/{dtype}: {r['median_ms']:.1f} ms median, "
                      f"{gfs:.1f} GF/s ({row['pct']:.0f} % of {mm:.1f}), others {r['others']:.2f} cores",
                      flush=True)
                if r["profile"]:
                    print("    ms/call  n  shape                        op")
                    for ms, n, shape, op in r["profile"]:
                        print(f"    {ms:7.2f} {n:3d}  {shape:28s} {op[:100]}")

    print()
    for line in flop_lines:
        print(line)
    print()
    head = ["config", "B", "attention", "dtype", "compile s", "first call s", "median ms", "min ms", "GFLOP",
            "GFLOP/s", "matmul GF/s", "% matmul", "others"]
    if args.accuracy:
        head += ["max Δscore", "max Δbox px", "Δdecisions"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["config"], r["batch"], r["attention"], r["dtype"], f"{r['compile_s']:.1f}", f"{r['first_s']:.1f}",
                 f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['gflop']:.2f}", f"{r['gfs']:.1f}",
                 f"{r['mm']:.1f}", f"{r['pct']:.0f}", f"{r['others']:.2f}"]
        if args.accuracy:
            cells += [f"{r['d_score']:.2g}", f"{r['d_box_px']:.2g}", r["flips"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(rows=rows, flops=flop_lines), indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/forward.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
