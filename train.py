"""Train GRM: ``python train.py --config configs/<name>.py[:arg] --workdir DIR [--config.train.lr=...]``.

With no flags: the built-in default (``configs/grm_tiny_synthetic.py``): a small GRM trained on generated
sequences and evaluated on held-out ones, a few minutes on a 2-core CPU (``make demo``). A run resumes from the
latest checkpoint in its workdir. SIGTERM (preemption) saves a checkpoint and stops: no evaluation follows, and the
exit status is 143 (128 + SIGTERM, what the signal itself would have given) so that a scheduler sees the preemption.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging

from grm_jax import cli, compilation_cache, distributed
from grm_jax.config import validate
from grm_jax.train.run import train_and_evaluate

EXIT_PREEMPTED = 143  # 128 + SIGTERM

_CONFIG = cli.define_config("configs/grm_tiny_synthetic.py")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "checkpoints, logs and results go here")


def main(argv: list[str]) -> int:
    compilation_cache.enable()  # $GRM_JAX_CACHE ("off" to disable), else ~/.cache/grm_jax/xla
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every step at INFO
    config = _CONFIG.value
    validate(config)
    distributed.initialize(config)  # config.train.distributed: join the other processes first
    print(f"devices: {jax.devices()} (process {jax.process_index()} of {jax.process_count()})")
    out = train_and_evaluate(config, _WORKDIR.value)
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


if __name__ == "__main__":
    cli.run(main)
