"""What the backend's default float32 matmul precision costs: the official tiny GRM at each precision, against the
outputs the official PyTorch code produced (``tests/fixtures/official/grm_tiny``).

    python benchmarks/precision.py                 # eval outputs at thresholds 0 and 0.4, batch 2
    python benchmarks/precision.py --json rows.json

Precisions: ``highest`` (exact float32 products; what the parity tests need), ``default`` (the backend's choice:
TF32 tensor cores for float32 on NVIDIA GPUs since Ampere, exact float32 on a CPU), ``bfloat16`` (a bfloat16 model:
bfloat16 operands, float32 accumulation). Columns: the largest absolute deviation from the official outputs (score
map, normalised boxes, backbone features), token decisions that differ (of layers × tokens × batch).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from grm_jax import cli  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.convert.official import read_state_dict  # noqa: E402
from grm_jax.convert.state_dict import state_dict_to_variables  # noqa: E402
from grm_jax.models import build_model, to_official_layout  # noqa: E402
from grm_jax.models.grm import inference_variables  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "official" / "grm_tiny"
PRECISIONS = {"highest": ("float32", "highest"), "default": ("float32", None), "bfloat16": ("bfloat16", None)}


def deviation(out: dict, ref: dict, tag: str) -> dict:
    """max |out − official| per output, and the number of flipped decisions."""
    flips = np.asarray(out["decisions"]) != ref[f"eval_{tag}_decisions"]
    return dict(d_score=float(np.abs(np.asarray(out["score_map"]) - ref[f"eval_{tag}_score_map"]).max()),
                d_box=float(np.abs(np.asarray(out["pred_boxes"]) - ref[f"eval_{tag}_pred_boxes"]).max()),
                d_features=float(np.abs(np.asarray(out["backbone_out"]) - ref[f"eval_{tag}_backbone_out"]).max()),
                flips=f"{int(flips.sum())}/{flips.size}")


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("precisions", "highest,default,bfloat16", "precisions to compare, comma-separated",
                        flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows as JSON to this path", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Prints each precision's deviation from the official outputs."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)

    ref = dict(np.load(FIXTURE / "outputs.npz"))
    z = jnp.asarray(ref["template"].transpose(0, 2, 3, 1))
    x = jnp.asarray(ref["search"].transpose(0, 2, 3, 1))
    mask = jnp.asarray(ref["template_mask"])
    state_dict = read_state_dict(FIXTURE / "state_dict.pth")
    print(f"jax {jax.__version__}, {jax.devices()}\n")
    rows = []
    for name in args.precisions.split(","):
        dtype, precision = PRECISIONS[name]
        config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
        config.model.dtype = dtype
        model = build_model(config)
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))  # noqa: B023 - called at once
        variables = inference_variables(state_dict_to_variables(state_dict, shapes), dtype)
        forward = jax.jit(lambda v, z, x, m, t, model=model: model.apply(v, z, x, m, threshold=t))
        for tag, threshold in (("t0", 0.0), ("t0p4", 0.4)):  # one program for both thresholds
            with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
                out = forward(variables, z, x, mask, jnp.float32(threshold))
            rows.append(dict(precision=name, threshold=threshold, **deviation(to_official_layout(out), ref, tag)))

    print("| precision | threshold | max Δscore | max Δbox (normalised) | max Δfeatures | Δdecisions |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['threshold']} | {r['d_score']:.2g} | {r['d_box']:.2g} | "
              f"{r['d_features']:.2g} | {r['flips']} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(rows=rows), indent=1))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/precision.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
