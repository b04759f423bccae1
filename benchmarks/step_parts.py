"""What one part of the GRM train step costs the whole step: the step with that part replaced by cheaper math.

    python benchmarks/step_parts.py --config B/256 --batch 2 --rounds 8
    python benchmarks/step_parts.py --parts plain_softmax,no_optimizer --rounds 6

A bound, not a faster step: each variant computes something else on purpose, so its numbers are only its time.
Timing one operation alone says little about the whole step on a 2-core CPU (benchmarks/README.md: levers that
halved an operation alone left the step as it was); here every variant is the whole pmap step as ``train.py``
compiles it, and the variants take turns, one step each per round, in one process, so that they share the machine's
drift. Parts (``--parts``, comma-separated; ``base`` is always timed first):

* ``plain_softmax``: the division layers' masked softmax (``relation.policy_attention``: the mask built from the
  decisions, the ε leak, the written-out backward with the decisions' gradient) replaced by softmax(logits)·V under
  autodiff. The decisions stay in the program with a zero weight, so the division MLPs still run both ways.
* ``identity_gelu``: the blocks' MLP GELU (both passes) replaced by the identity.
* ``scale_only_layernorm``: the backbone's LayerNorms (two per block and the final one) replaced by x·γ + β, the
  same parameters without the normalisation.
* ``no_optimizer``: gradient clipping and AdamW replaced by ``optax.set_to_zero()`` (the gradients are still formed
  and their norm logged).
* ``all``: every part together.

Prints a Markdown table: the step's median (min–max) over the rounds, its difference from ``base`` and XLA's temp
for the compiled step (memory analysis). ``--json PATH`` also writes the rows.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402
from train_throughput import compiled_temp_mb, synthetic_batch  # noqa: E402

from grm_jax import cli, xla_flags  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.models import build_model, relation, vit  # noqa: E402
from grm_jax.train.loop import init_train_state  # noqa: E402
from grm_jax.train.optimizer import make_optimizer  # noqa: E402
from grm_jax.train.parallel import PmapRunner  # noqa: E402

PARTS = ("plain_softmax", "identity_gelu", "scale_only_layernorm", "no_optimizer")


def plain_attention(logits, decision, v, num_template):
    """softmax(logits)·V, + 0·Σ decision (the decisions kept in the program, their gradient zero)."""
    del num_template
    out = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)
    return out + 0.0 * jnp.sum(decision).astype(out.dtype)


def identity(x):
    """The identity, in place of GELU."""
    return x


class ScaleOnlyNorm(nn.Module):
    """x·γ + β with ``nn.LayerNorm``'s parameters (names, shapes, initialisers), in place of LayerNorm."""

    epsilon: float = 1e-6
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * scale + self.param("bias", nn.initializers.zeros, (x.shape[-1],))


MODEL_REPLACEMENTS = {  # part: (module, attribute, replacement); the model reads each attribute when it is traced
    "plain_softmax": (relation, "policy_attention", plain_attention),
    "identity_gelu": (vit, "gelu", identity),
    "scale_only_layernorm": (nn, "LayerNorm", ScaleOnlyNorm),  # flax's own: grm_jax/models/vit.py reads nn.LayerNorm
}


@contextlib.contextmanager
def replaced(parts: set[str]):
    """Within the block, the model functions of ``parts`` are replaced (module docstring); restored on exit."""
    chosen = [MODEL_REPLACEMENTS[p] for p in parts if p in MODEL_REPLACEMENTS]
    saved = [getattr(module, name) for module, name, _ in chosen]
    try:
        for module, name, replacement in chosen:
            setattr(module, name, replacement)
        yield
    finally:
        for (module, name, _), original in zip(chosen, saved):
            setattr(module, name, original)


def variant_parts(variant: str) -> set[str]:
    """The parts a variant replaces: none for ``base``, all for ``all``, else the one it names."""
    return {"base": set(), "all": set(PARTS)}.get(variant, {variant})


def build(name: str, batch: int, variant: str) -> dict:
    """The variant's compiled pmap step (``train.py``'s runner), its placed state, a synthetic batch and its temp."""
    parts = variant_parts(variant)
    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:{name}")
    config.train.batch_size = batch
    make = ((lambda c, p, s: optax.set_to_zero()) if "no_optimizer" in parts else make_optimizer)
    with replaced(parts):  # the step is traced here, at its first call: the replacements are in its program
        model = build_model(config)
        state = init_train_state(config, model, lambda p: make(config, p, 100))
        runner = PmapRunner(model, make(config, state.params, 100), config, 100, jax.local_devices())
        state, key = runner.place_state(state), runner.place_key(jax.random.PRNGKey(0))
        data = synthetic_batch(config, jax.local_device_count(), batch)
        temp_mb = compiled_temp_mb(runner, state, data, key)
        state, metrics = runner(state, data, key)  # the compiling call
        jax.block_until_ready(metrics)
    return dict(runner=runner, state=state, data=data, key=key, temp_mb=temp_mb, times=[])


def run_rounds(runs: dict, rounds: int) -> None:
    """``rounds`` rounds, one step of every variant each, in turn; each step's seconds into its ``times``."""
    for _ in range(rounds):
        for run in runs.values():
            start = time.perf_counter()
            run["state"], metrics = run["runner"](run["state"], run["data"], run["key"])
            jax.block_until_ready(metrics)
            run["times"].append(time.perf_counter() - start)


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("config", "tiny", "configs/grm.py variant", flag_values=fv)
    flags.DEFINE_integer("batch", 2, "batch size per device", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("rounds", 6, "timed rounds (one step of every variant each)", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("parts", ",".join(PARTS + ("all",)), "variants besides base, comma-separated: "
                        + ", ".join(PARTS + ("all",)), flag_values=fv)
    flags.DEFINE_string("json", None, "also write the rows as JSON to this path", flag_values=fv)


def run_benchmark(fv: flags.FlagValues, argv: list[str]) -> None:
    """Prints each variant's step time against the base step's, alternating in one process."""
    xla_flags.prefer_memory_scheduler()  # as train.py does, before JAX starts
    cli.no_arguments(argv)
    args = cli.namespace(fv)
    variants = [v for v in args.parts.split(",") if v]
    unknown = sorted(set(variants) - set(PARTS) - {"all", "base"})
    if unknown:
        raise app.UsageError(f"--parts: unknown part(s) {unknown}; known: {list(PARTS) + ['all']}")
    variants = ["base"] + [v for v in dict.fromkeys(variants) if v != "base"]
    runs = {v: build(args.config, args.batch, v) for v in variants}
    run_rounds(runs, args.rounds)
    base = float(np.median(runs["base"]["times"]))
    print(f"{args.config}, batch {args.batch} per device, {jax.local_device_count()} device(s), "
          f"{args.rounds} rounds\n")
    print("| variant | step ms: median (min–max) | against base ms | temp MB |")
    print("|---|---:|---:|---:|")
    rows = []
    for v, run in runs.items():
        ms = [1e3 * t for t in run["times"]]
        median = float(np.median(ms))
        rows.append(dict(variant=v, step_ms=median, step_times_ms=ms, vs_base_ms=median - 1e3 * base,
                         temp_mb=run["temp_mb"]))
        print(f"| {v} | {median:.0f} ({min(ms):.0f}–{max(ms):.0f}) | {median - 1e3 * base:+.0f} | "
              f"{run['temp_mb']:.0f} |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(config=args.config, batch=args.batch, rows=rows),
                                                      indent=1))


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/step_parts.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_benchmark, __doc__)


if __name__ == "__main__":
    sys.exit(main())
