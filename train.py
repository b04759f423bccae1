"""Train GRM: ``python train.py --config configs/<name>.py[:arg] --workdir DIR [--config.train.lr=...]``.

With no flags: the built-in default (``configs/grm_tiny_synthetic.py``): a small GRM trained on generated
sequences and evaluated on held-out ones, a few minutes on a 2-core CPU (``make demo``). A run resumes from the
latest checkpoint in its workdir. SIGTERM (preemption) saves a checkpoint and stops: no evaluation follows, and the
exit status is 143 (128 + SIGTERM, what the signal itself would have given) so that a scheduler sees the preemption.
"""

from __future__ import annotations

import sys

import jax
from absl import flags

from grm_jax import cli, compilation_cache, distributed, xla_flags
from grm_jax.config import validate
from grm_jax.train.run import train_and_evaluate

EXIT_PREEMPTED = 143  # 128 + SIGTERM

#: Relative to the repository root (this file's folder): the default works from any working directory.
DEFAULT_CONFIG = "configs/grm_tiny_synthetic.py"


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides ``--config`` (and its overrides) and ``--verbosity``."""
    flags.DEFINE_string("workdir", "runs/demo", "checkpoints, logs and results go here", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Trains (and evaluates) as the flags say; the exit status (:data:`EXIT_PREEMPTED` after SIGTERM)."""
    xla_flags.prefer_memory_scheduler()  # before JAX starts: the CPU step scheduled for memory (grm_jax/xla_flags.py)
    compilation_cache.enable()  # $GRM_JAX_CACHE ("off" to disable), else ~/.cache/grm_jax/xla
    cli.no_arguments(args)
    config = fv.config
    validate(config)
    distributed.initialize(config)  # config.train.distributed: join the other processes first
    print(f"devices: {jax.devices()} (process {jax.process_index()} of {jax.process_count()})")
    out = train_and_evaluate(config, fv.workdir)
    if out["preempted"]:
        print(f"preempted: stopped at step {out['step']} (checkpoint saved in {out['workdir']}); rerun the same "
              f"command to resume")
        return EXIT_PREEMPTED
    if "eval" in out and "scores" in out["eval"]:
        scores = out["eval"]["scores"]
        print(f"\n{config.eval.dataset}: " + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
        if "comparison" in out["eval"]:
            print("\n" + out["eval"]["comparison"])
        print(f"report: {out['eval']['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python train.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``). absl logging shows
    warnings only unless ``--verbosity`` is given: Orbax and TFDS log every step at INFO."""
    return cli.call(argv, define_flags, run, __doc__, config=DEFAULT_CONFIG, verbosity=True)


if __name__ == "__main__":
    sys.exit(main())
