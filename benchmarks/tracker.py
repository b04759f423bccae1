"""Per-frame time of the tracker (``grm_jax.track.tracker.Tracker``) next to the bare network forward.

    python benchmarks/tracker.py                                  # GRM-B/256, random init, 320x240, 30 frames
    python benchmarks/tracker.py --config tiny --frames 100
    python benchmarks/tracker.py --attention fused --dtype bfloat16
    python benchmarks/tracker.py --batch 32                       # 32 sequences tracked together (BatchTracker)

A generated sequence (``grm_jax.data.synthetic``, 320x240) is tracked from its first box with the ``host`` crop
(OpenCV on the host, exact) and the ``device`` crop (crop and resize inside the compiled call). Per-frame time is
the wall time of ``Tracker.track(frame)``: crop, transfer, forward, Hann window, decode, map back, clip and the
device→host copy of the outputs; the first ``--warmup`` frames (compilation) are not timed. ``bare forward`` is
``jit(model.apply)`` on device-resident inputs of the same shapes, timed once before every tracked frame so that
the machine's drift affects both alike; ``overhead`` = the median over frames of tracker / bare − 1. Also printed:
the time of the host crop + normalisation alone. Random weights track nothing in particular; the
timing does not depend on the weights. ``others``: cores used by other processes meanwhile (see forward.py).
``--maps``: every frame's maps, decisions and search crop come to the host too (what visualisation needs; the
default brings the boxes alone, as evaluation does). ``--batch B``: B generated sequences advance together
(``BatchTracker``, one compiled call per step for all B); ``frames/s`` = B / (median time per step), and the bare
forward runs at batch B. ``--dtype`` as in forward.py (``float32`` = highest matmul precision, ``tf32`` = the
backend's default). ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from forward import OtherLoad, model_dtype, precision_scope, timed  # noqa: E402

from grm_jax import cli  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.data.processing import normalize_image, sample_target  # noqa: E402
from grm_jax.data.synthetic import generate_sequence  # noqa: E402
from grm_jax.models import build_model, example_inputs, host_init  # noqa: E402
from grm_jax.models.grm import inference_variables  # noqa: E402
from grm_jax.track.tracker import BatchTracker, TrackerParams  # noqa: E402


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("config", "B/256", "a configs/grm.py variant", flag_values=fv)
    flags.DEFINE_enum("attention", "masked", ["masked", "fused"], "attention path", flag_values=fv)
    flags.DEFINE_enum("dtype", "float32", ["float32", "tf32", "bfloat16"], "compute precision", flag_values=fv)
    flags.DEFINE_integer("batch", 1, "sequences tracked together", flag_values=fv)
    flags.DEFINE_string("crops", "host,device", "crop paths to time", flag_values=fv)
    flags.DEFINE_bool("maps", False, "also bring every frame's maps, decisions and crop to the host (visualisation); "
                      "by default only the boxes, as evaluation does", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows as JSON to this path", flag_values=fv)
    flags.DEFINE_integer("frames", 30, "timed frames per crop path", flag_values=fv)
    flags.DEFINE_integer("warmup", 3, "untimed frames first", flag_values=fv)
    flags.DEFINE_integer("seed", 3, "synthetic sequence seed", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Times the tracker on synthetic sequences with the flags' model."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)

    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:{args.config}")
    config.model.attention = args.attention
    config.model.dtype = model_dtype(args.dtype)
    with precision_scope(args.dtype):  # the precision in force when each program is traced
        run(config, args)


def run(config, args):
    model = build_model(config)
    z, x = example_inputs(config, args.batch)
    variables = jax.device_put(inference_variables(host_init(model, z[:1], x[:1]), config.model.dtype))
    sequences = [generate_sequence(args.seed + i, args.frames + args.warmup + 1, height=240, width=320)
                 for i in range(args.batch)]
    frames = np.stack([s[0] for s in sequences], 1)  # (T, B, H, W, 3)
    boxes = np.stack([s[1] for s in sequences], 1)  # (T, B, 4)
    load = OtherLoad()
    print(f"jax {jax.__version__}, {jax.devices()}; {args.config} {args.attention}/{args.dtype}, "
          f"{args.batch} sequence(s) of {frames.shape[2:]} x {len(frames)} frames\n")

    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=z.shape), jnp.float32)
    x = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    threshold = jnp.float32(0.0)
    forward = jax.jit(lambda v, z, x, t: model.apply(v, z, x, threshold=t))
    timed(forward, variables, z, x, threshold, warmup=args.warmup, iters=1)

    rows = []
    for crop in args.crops.split(","):
        tracker = BatchTracker(model, variables, TrackerParams.from_config(config, crop=crop), args.batch,
                               maps=args.maps)
        for slot in range(args.batch):
            tracker.initialize(slot, frames[0, slot], boxes[0, slot])
        for step in frames[1:1 + args.warmup]:
            tracker.track(list(step))
        load.start()
        bare, times = [], []
        for step in frames[1 + args.warmup:]:  # a bare forward, then a step: drift between the two cancels
            bare.append(timed(forward, variables, z, x, threshold, warmup=0, iters=1)[0])
            start = time.perf_counter()
            tracker.track(list(step))
            times.append(time.perf_counter() - start)
        bare, times = 1e3 * np.asarray(bare), 1e3 * np.asarray(times)
        rows.append(dict(config=args.config, attention=args.attention, dtype=args.dtype, batch=args.batch,
                         maps=args.maps, path=f"tracker, {crop} crop", median=np.median(times), min=times.min(),
                         fps=1e3 * args.batch / np.median(times), bare=np.median(bare),
                         overhead=100 * np.median(times / bare - 1), others=load.stop()))

    crop_ms = []
    state = boxes[0, 0]
    for frame in frames[1:, 0]:
        start = time.perf_counter()
        crop, _, _ = sample_target(frame, state, config.test.search_factor, config.test.search_size)
        normalize_image(crop)
        crop_ms.append(1e3 * (time.perf_counter() - start))

    print("| path | B | median ms/step | min ms | frames/s | bare forward ms (interleaved) "
          "| overhead (median of per-step ratios) | others |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['batch']} | {r['median']:.1f} | {r['min']:.1f} | {r['fps']:.0f} | {r['bare']:.1f} "
              f"| {r['overhead']:+.1f} % | {r['others']:.2f} |")
    crop_ms = float(np.median(crop_ms))
    print(f"\nhost crop + normalisation alone (sample_target + normalize_image): {crop_ms:.2f} ms/frame")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(rows=rows, host_crop_ms=crop_ms), indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/tracker.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
