"""Two ways to run the per-device train step: ``jax.pmap`` (default, the TPU-pod path) and ``jax.shard_map``
inside ``jax.jit`` on a 1-D mesh. Both take this process's batches shaped (local devices, b, ...) and a state that
the runner placed, run the same program on every process, and leave their outputs on the devices.

On several processes (``jax.distributed``) every device of every process is one data-parallel axis, in process
order: process p's local device d is axis index p·D + d, and gradients, metrics and synchronised BatchNorm
statistics are averaged over all of them. ``pmap`` must then map over all local devices (a ``devices=`` list of
one process's devices would make its collectives local to that process).

Checkpoints see the state as global arrays (:meth:`global_state`): replicated values once, per-device BatchNorm
statistics as one array sharded over the global axis, so every process saves and restores its own shards and no
host gathers the state (:meth:`local_state` is the inverse).

Under ``shard_map`` with ``check_vma=True`` the gradients of replicated parameters arrive already summed over the
mesh axis, so the step divides by the axis size instead of a second ``pmean`` (``reduce_grads=False``).
BatchNorm statistics are per device under pmap (as the official DDP run) unless synchronised; the shard_map
runner keeps the state replicated and therefore needs ``sync_batch_stats=True``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grm_jax.distributed import first_local_shard
from grm_jax.train.step import AXIS, make_train_step


def _first_shard(tree, drop_leading_axis: bool):
    """Host copy of this process's first shard of each leaf (only that shard is transferred)."""

    def first(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)[0] if drop_leading_axis else np.asarray(x)
        data = np.asarray(first_local_shard(x))
        return data.reshape(x.shape[1:]) if drop_leading_axis else data

    return jax.tree_util.tree_map(first, tree)


def global_devices(devices) -> list:
    """The data-parallel axis: ``devices`` on one process, every process's devices (process order) on several."""
    if jax.process_count() == 1:
        return list(devices)
    if set(devices) != set(jax.local_devices()):
        raise ValueError(f"on {jax.process_count()} processes every process trains on all its local devices "
                         f"({jax.local_devices()}), not {devices}")
    return list(jax.devices())


def _by_device(x: jax.Array) -> dict:
    return {shard.device: shard.data for shard in x.addressable_shards}


class _Runner:
    """What both runners share: the global mesh, replicated/sharded placements, metric and batch handling."""

    def __init__(self, devices):
        self.devices = list(devices)
        self.mesh = Mesh(np.asarray(global_devices(devices)), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))

    def _global_replicated(self, value) -> jax.Array:
        """A host value (the same on every process) as a replicated global array."""
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])


class PmapRunner(_Runner):
    """``jax.pmap(train_step, axis_name='batch')``; state replicated with a leading local-device axis; the state
    argument is donated (its buffers are reused for the new state)."""

    def __init__(self, model, optimizer, config, steps_per_epoch, devices):
        super().__init__(devices)
        step = make_train_step(model, optimizer, config, steps_per_epoch, batched_update=True)
        self.step_fn = jax.pmap(step, axis_name=AXIS, donate_argnums=(0,),
                                devices=self.devices if jax.process_count() == 1 else None)
        # pmap returns arrays sharded as NamedSharding(mesh over the local devices, P('batch')); inputs placed any
        # other way (jax_utils.replicate gives a PmapSharding) make the second call compile the step again (10 s
        # for the tiny GRM on 2 CPU cores), so the state, key and batches are placed exactly so.
        self.local = NamedSharding(Mesh(np.asarray(self.devices), (AXIS,)), P(AXIS))
        self._first_device = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree),
                                     out_shardings=self.replicated)  # compiled once, used at every save

    def _stacked(self, trees: list):
        return jax.device_put(jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees),
                              self.local)

    def place_state(self, state):
        return self._stacked([state] * len(self.devices))

    def place_key(self, key):
        return self._stacked([key] * len(self.devices))

    def place_batch(self, batch: dict) -> dict:
        return jax.device_put(batch, self.local)

    def first_replica(self, tree):
        """This process's first device's values (leaves carry a leading device axis)."""
        return _first_shard(tree, drop_leading_axis=True)

    def global_state(self, state, per_device_stats: bool) -> dict:
        """The checkpointed tree as global arrays: step, params, opt_state and batch_stats (device 0's) replicated;
        with ``per_device_stats`` also ``batch_stats_per_device`` (global devices, ...) sharded over the axis."""
        replicate = lambda x: self._replicated_from_local(x)
        tree = dict(step=replicate(state.step), params=jax.tree_util.tree_map(replicate, state.params),
                    opt_state=jax.tree_util.tree_map(replicate, state.opt_state))
        if per_device_stats:
            per_device = jax.tree_util.tree_map(self._sharded_from_local, state.batch_stats)
            tree["batch_stats_per_device"] = per_device
            # device 0's statistics, replicated (a broadcast of a few kB from the process that holds device 0)
            tree["batch_stats"] = self._first_device(per_device)
        else:
            tree["batch_stats"] = jax.tree_util.tree_map(replicate, state.batch_stats)
        return tree

    def abstract_global_state(self, state, per_device_stats: bool) -> dict:
        """:meth:`global_state`'s shapes, dtypes and shardings as ``jax.ShapeDtypeStruct`` leaves, without the
        arrays (the restore target: :meth:`global_state` copies every leaf to drop its device axis, which for
        GRM-B/256 is 1.1 GB more at the moment the run's memory peaks)."""
        replicate = lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=self.replicated)
        tree = dict(step=replicate(state.step), params=jax.tree_util.tree_map(replicate, state.params),
                    opt_state=jax.tree_util.tree_map(replicate, state.opt_state),
                    batch_stats=jax.tree_util.tree_map(replicate, state.batch_stats))
        if per_device_stats:
            tree["batch_stats_per_device"] = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct((len(self.mesh.devices.flat),) + x.shape[1:], x.dtype,
                                               sharding=self.sharded), state.batch_stats)
        return tree

    def local_state(self, tree: dict, state_type):
        """Inverse of :meth:`global_state`: the pmap layout (every local device a copy; per-device statistics
        each to its device)."""
        to_local = lambda x: self._local_from_global(x, replicated=True)
        batch_stats = (jax.tree_util.tree_map(lambda x: self._local_from_global(x, replicated=False),
                                              tree["batch_stats_per_device"])
                       if "batch_stats_per_device" in tree else jax.tree_util.tree_map(to_local, tree["batch_stats"]))
        return state_type(step=to_local(tree["step"]), params=jax.tree_util.tree_map(to_local, tree["params"]),
                          batch_stats=batch_stats, opt_state=jax.tree_util.tree_map(to_local, tree["opt_state"]))

    def _replicated_from_local(self, x: jax.Array) -> jax.Array:
        shards = _by_device(x)
        return jax.make_array_from_single_device_arrays(
            x.shape[1:], self.replicated, [shards[d].reshape(x.shape[1:]) for d in self.devices])

    def _sharded_from_local(self, x: jax.Array) -> jax.Array:
        shards = _by_device(x)
        shape = (len(self.mesh.devices.flat),) + x.shape[1:]
        return jax.make_array_from_single_device_arrays(shape, self.sharded, [shards[d] for d in self.devices])

    def _local_from_global(self, x: jax.Array, replicated: bool) -> jax.Array:
        shards = _by_device(x)
        blocks = [shards[d][None] if replicated else shards[d] for d in self.devices]
        shape = (len(self.devices),) + (x.shape if replicated else x.shape[1:])
        return jax.make_array_from_single_device_arrays(shape, self.local, blocks)

    def __call__(self, state, batch, key):
        return self.step_fn(state, batch, key)


class ShardMapRunner(_Runner):
    """``jax.jit(jax.shard_map(train_step))`` on a 1-D mesh over every process's devices; state replicated,
    batch sharded, state donated."""

    def __init__(self, model, optimizer, config, steps_per_epoch, devices):
        if len(global_devices(devices)) > 1 and not config.train.sync_batch_stats:
            raise ValueError("config.train.parallel = 'shard_map' keeps one replicated state: it needs "
                             "config.train.sync_batch_stats = True")
        super().__init__(devices)
        step = make_train_step(model, optimizer, config, steps_per_epoch, reduce_grads=False)

        def per_device(state, batch, key):
            batch = jax.tree_util.tree_map(lambda x: x[0], batch)  # (1, b, ...) block → (b, ...)
            return step(state, batch, key)

        self.step_fn = jax.jit(jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(AXIS), P()),
                                             out_specs=(P(), P()), check_vma=True), donate_argnums=(0,))

    def place_state(self, state):
        return jax.tree_util.tree_map(self._global_replicated, state)

    def place_key(self, key):
        return self._global_replicated(key)

    def place_batch(self, batch: dict) -> dict:
        """This process's (local devices, b, ...) batch as its part of the global (devices, b, ...) batch."""
        return jax.tree_util.tree_map(
            lambda x: x if isinstance(x, jax.Array) else jax.make_array_from_process_local_data(self.sharded, x), batch)

    def first_replica(self, tree):
        """The replicated values (no device axis)."""
        return _first_shard(tree, drop_leading_axis=False)

    def global_state(self, state, per_device_stats: bool) -> dict:
        del per_device_stats  # always synchronised here
        return dict(step=state.step, params=state.params, batch_stats=state.batch_stats, opt_state=state.opt_state)

    def abstract_global_state(self, state, per_device_stats: bool) -> dict:
        """:meth:`global_state` as ``jax.ShapeDtypeStruct`` leaves (the restore target)."""
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                      self.global_state(state, per_device_stats))

    def local_state(self, tree: dict, state_type):
        return state_type(step=tree["step"], params=tree["params"], batch_stats=tree["batch_stats"],
                          opt_state=tree["opt_state"])

    def __call__(self, state, batch, key):
        return self.step_fn(state, self.place_batch(batch), key)


RUNNERS = {"pmap": PmapRunner, "shard_map": ShardMapRunner}
