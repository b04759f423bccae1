"""Several processes (hosts) as one JAX system: ``config.train.distributed``, read by ``train.py`` and ``eval.py``.

Every process runs the same command with its own ``process_id``; ``jax.distributed.initialize`` joins
them through the coordinator (process 0's ``HOST:PORT``), after which ``jax.devices()`` lists every process's
devices and collectives (pmap's ``pmean``, jit over a global mesh) span all of them. Where the cluster describes
itself (TPU pod slices, SLURM, Open MPI) the three settings may be left unset and JAX detects them. On CPU the
cross-process collectives are gloo's (switched on here; the setting does nothing on GPU or TPU).

Orbax's barriers between the processes (before and after each checkpoint) go through the distributed client's
key-value store rather than a device collective: they then carry a timeout, and they work on CPU, where JAX's
collective-based barrier (``multihost_utils.sync_global_devices``) fails on gloo with "Fetching value for
`jax.Array` that spans non-addressable devices" (jax 0.10.2, orbax-checkpoint 0.12.8).
"""

from __future__ import annotations

import jax
import ml_collections
import orbax.checkpoint  # noqa: F401  (defines the barrier flag set below)
from absl import flags


def initialize_kwargs(train: ml_collections.ConfigDict) -> dict:
    """The ``jax.distributed.initialize`` arguments that the config sets (unset ones are left to detection)."""
    kwargs = {}
    if train.coordinator_address:
        kwargs["coordinator_address"] = train.coordinator_address
    if train.num_processes:
        kwargs["num_processes"] = int(train.num_processes)
    if train.process_id >= 0:
        kwargs["process_id"] = int(train.process_id)
    return kwargs


def initialize(config: ml_collections.ConfigDict) -> None:
    """Join the other processes when ``config.train.distributed``; nothing otherwise. Call before any JAX work."""
    if not config.train.distributed:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not flags.FLAGS.is_parsed():  # outside an absl app (tests, scripts): the defaults, so the flag can be read
        flags.FLAGS.mark_as_parsed()
    flags.FLAGS["experimental_orbax_use_distributed_barrier"].value = True  # defined by orbax.checkpoint
    jax.distributed.initialize(**initialize_kwargs(config.train))


def barrier(name: str, timeout_s: int = 600) -> None:
    """Wait until every process has reached ``barrier(name)`` (at most ``timeout_s``); nothing on one process."""
    if jax.process_count() > 1:
        orbax.checkpoint.multihost.sync_global_processes(name, timeout=timeout_s)


def first_local_shard(x: jax.Array) -> jax.Array:
    """This process's first shard of ``x``, on its first local device: its copy of a replicated global array, or
    that device's block of a sharded one. Reading it transfers that shard only."""
    return x.addressable_shards[0].data


def my_share(items: list) -> list:
    """This process's share of ``items`` for work split across processes: every P-th item from the process
    index on (P = process count), so that long and short items spread evenly."""
    return items[jax.process_index()::jax.process_count()]


def main_first(name: str, fn) -> None:
    """``fn()`` on process 0, then on the others once it has finished: for work on a shared disk that one process
    must do and the others find done (preparing a dataset); just ``fn()`` on one process."""
    if jax.process_index() == 0:
        fn()
    barrier(name, timeout_s=3600)
    if jax.process_index() != 0:
        fn()
