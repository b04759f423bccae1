"""Two ways to run the per-device train step over the local devices: ``jax.pmap`` (default, the TPU-pod path) and
``jax.shard_map`` inside ``jax.jit`` on a 1-D mesh. Both take host batches shaped (devices, b, ...) and a state
that the runner placed, and both return metrics as plain host values.

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

from grm_jax.train.step import AXIS, make_train_step


def _first_shard(tree, drop_leading_axis: bool):
    """Host copy of the first device's shard of each leaf (only that shard is transferred)."""

    def first(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)[0] if drop_leading_axis else np.asarray(x)
        data = np.asarray(x.addressable_shards[0].data)
        return data.reshape(x.shape[1:]) if drop_leading_axis else data

    return jax.tree_util.tree_map(first, tree)


class PmapRunner:
    """``jax.pmap(train_step, axis_name='batch')``; state replicated with a leading device axis.

    No buffer donation: with it this jax version compiles the step a second time on the second call (the first
    call's replicated inputs and later outputs hash differently), which costs more than it saves.
    """

    def __init__(self, model, optimizer, config, steps_per_epoch, devices):
        self.devices = devices
        self.step_fn = jax.pmap(make_train_step(model, optimizer, config, steps_per_epoch), axis_name=AXIS,
                                devices=devices)
        # pmap returns arrays sharded as NamedSharding(mesh over the devices, P('batch')); inputs placed any other
        # way (jax_utils.replicate gives a PmapSharding) make the second call compile the step again (10 s for the
        # tiny GRM on 2 CPU cores), so the state and key are placed exactly as the step returns them.
        self.sharding = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), P(AXIS))

    def _stacked(self, trees: list):
        return jax.device_put(jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees),
                              self.sharding)

    def place_state(self, state):
        return self._stacked([state] * len(self.devices))

    def place_per_device(self, trees: list):
        return self._stacked(trees)

    def place_key(self, key):
        return self._stacked([key] * len(self.devices))

    def first_replica(self, tree):
        """Device 0's values (leaves carry a leading device axis)."""
        return _first_shard(tree, drop_leading_axis=True)

    def __call__(self, state, batch, key):
        return self.step_fn(state, batch, key)


class ShardMapRunner:
    """``jax.jit(jax.shard_map(train_step))`` on a 1-D mesh over ``devices``; state replicated, batch sharded."""

    def __init__(self, model, optimizer, config, steps_per_epoch, devices):
        if len(devices) > 1 and not config.train.sync_batch_stats:
            raise ValueError("config.train.parallel = 'shard_map' keeps one replicated state: it needs "
                             "config.train.sync_batch_stats = True")
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        step = make_train_step(model, optimizer, config, steps_per_epoch, reduce_grads=False)

        def per_device(state, batch, key):
            batch = jax.tree_util.tree_map(lambda x: x[0], batch)  # (1, b, ...) block → (b, ...)
            return step(state, batch, key)

        self.step_fn = jax.jit(jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(AXIS), P()),
                                             out_specs=(P(), P()), check_vma=True))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))

    def place_state(self, state):
        return jax.device_put(state, self.replicated)

    def place_per_device(self, trees: list):
        raise ValueError("shard_map runs keep synchronised (replicated) BatchNorm statistics")

    def place_key(self, key):
        return jax.device_put(key, self.replicated)

    def first_replica(self, tree):
        """The replicated values (no device axis)."""
        return _first_shard(tree, drop_leading_axis=False)

    def __call__(self, state, batch, key):
        return self.step_fn(state, jax.device_put(batch, self.sharded), key)


RUNNERS = {"pmap": PmapRunner, "shard_map": ShardMapRunner}
