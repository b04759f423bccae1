"""Runs a tiny training in its own process (fake CPU devices need XLA_FLAGS before jax starts).

usage: python tests/train/train_driver.py WORKDIR MAX_STEPS NUM_DEVICES [--sync] [--nan_at STEP] [--ckpt_every N]
                                         [--parallel pmap|shard_map] [--droppath RATE]
                                         [--coordinator HOST:PORT --num_processes P --process_id I]
NUM_DEVICES is per process. Writes WORKDIR/result.npz (process 0) with the final parameters, the per-step losses,
and WORKDIR/samples_<process>.npy: the global sample indices this process fed, per step.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from grm_jax import distributed  # noqa: E402
from grm_jax.config import load_config_file  # noqa: E402
from grm_jax.data.pipeline import host_sample_indices  # noqa: E402
from grm_jax.train.loop import train  # noqa: E402

GLOBAL_BATCH = 4


def global_batch(step: int, nan_at: int | None) -> dict:
    """The global batch of ``step``: a pure function of the step (so resumed runs see the same data)."""
    rng = np.random.default_rng([7, step])
    anno = np.stack([rng.uniform(0.2, 0.4, GLOBAL_BATCH), rng.uniform(0.2, 0.4, GLOBAL_BATCH),
                     rng.uniform(0.2, 0.4, GLOBAL_BATCH), rng.uniform(0.2, 0.4, GLOBAL_BATCH)], -1)
    batch = dict(template=rng.normal(size=(GLOBAL_BATCH, 64, 64, 3)).astype(np.float32),
                 search=rng.normal(size=(GLOBAL_BATCH, 128, 128, 3)).astype(np.float32),
                 template_mask=np.ones((GLOBAL_BATCH, 16), np.float32), search_anno=anno.astype(np.float32))
    if nan_at is not None and step == nan_at:
        batch["search"][1, 5, 5, 0] = np.nan
    return batch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("num_devices", type=int)
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--nan_at", type=int, default=None)
    parser.add_argument("--ckpt_every", type=int, default=2)
    parser.add_argument("--parallel", default="pmap")
    parser.add_argument("--droppath", type=float, default=0.0)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    args = parser.parse_args()
    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
    if args.coordinator:
        config.train.distributed = True
        config.train.coordinator_address = args.coordinator
        config.train.num_processes = args.num_processes
        config.train.process_id = args.process_id
        distributed.initialize(config)
    devices = jax.local_devices()[: args.num_devices]
    assert len(devices) == args.num_devices, jax.local_devices()
    config.model.drop_path_rate = args.droppath
    per_device = GLOBAL_BATCH // (args.num_devices * args.num_processes)
    config.train.batch_size = per_device
    config.train.max_steps = args.max_steps
    config.train.sync_batch_stats = args.sync
    config.train.parallel = args.parallel
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = args.ckpt_every
    config.data.sample_per_epoch = 8

    fed = []

    def make_batches(start):
        step = start
        while True:
            # This process's rows of the global batch, chosen as the real input pipeline chooses its samples.
            rows = host_sample_indices(step, per_device, len(devices), jax.process_index(), jax.process_count())
            fed.append(rows)
            batch = global_batch(step, args.nan_at)
            yield {k: v[rows - step * GLOBAL_BATCH] for k, v in batch.items()}
            step += 1

    result = train(config, args.workdir, make_batches, devices=devices, progress=False)
    np.save(pathlib.Path(args.workdir) / f"samples_{jax.process_index()}.npy", np.stack(fed))
    if jax.process_index() != 0:
        return
    flat = traverse_util.flatten_dict(result.state["params"], sep="/")
    np.savez(pathlib.Path(args.workdir) / "result.npz",
             losses=np.array([h["Ls/total"] for h in result.history]),
             steps=np.array([h["step"] for h in result.history]), **{f"p:{k}": v for k, v in flat.items()})


if __name__ == "__main__":
    main()
