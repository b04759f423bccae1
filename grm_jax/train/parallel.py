"""Two ways to run the per-device train step: ``jax.pmap`` (default, the TPU-pod path) and ``jax.shard_map``
inside ``jax.jit`` on a 1-D mesh. Both take this process's batches shaped (local devices, b, ...) and a state that
the runner placed, run the same program on every process, and leave their outputs on the devices.

On several processes (``jax.distributed``) every device of every process is one data-parallel axis, in process
order: process p's local device d is axis index p·D + d, and gradients, metrics and synchronised BatchNorm
statistics are averaged over all of them. ``pmap`` must then map over all local devices (a ``devices=`` list of
one process's devices would make its collectives local to that process).

Checkpoints see the state as global arrays (:meth:`global_state`): replicated values once, per-device BatchNorm
statistics as one array sharded over the global axis, so every process saves and restores its own shards and no
host gathers the state (:meth:`local_state` is the inverse). Under pmap both hand the state's buffers over instead
of copying them (the state passed in is deleted), so a save needs no second copy of the state.

Memory at the start of a run: :meth:`compile` builds the step's program from shapes alone, before the state exists
(the compiler's working memory, 1.2 GB for GRM-B/256 on a CPU, is then not on top of the state), and
:meth:`init_state` places the parameters and builds the optimizer's state on the devices, without a host copy of it.

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
from grm_jax.train.step import AXIS, create_state, make_train_step


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


def _spec(tree):
    """The shapes and dtypes of ``tree``'s leaves, with its structure (what a compiled program is specialised to)."""
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return structure, [(np.shape(x), np.dtype(x.dtype)) for x in leaves]


class _Runner:
    """What both runners share: the global mesh, replicated/sharded placements, metric and batch handling."""

    def __init__(self, devices):
        self.devices = list(devices)
        self.mesh = Mesh(np.asarray(global_devices(devices)), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self._compiled = self._compiled_for = None  # the ahead-compiled step and its batch spec (compile)

    def _global_replicated(self, value) -> jax.Array:
        """A host value (the same on every process) as a replicated global array."""
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])

    def compile(self, state, batch: dict, key) -> None:
        """Compile the step ahead of its first call, for a state shaped like ``state`` (arrays or
        ``jax.ShapeDtypeStruct`` leaves in this runner's layout: :meth:`abstract_state`) and host batches shaped like
        ``batch``. Later calls with batches of that shape run this program; others compile their own on their first
        call, as without it."""
        spec = self.batch_spec(batch)
        self._compiled = self.step_fn.lower(state, spec, key).compile()
        self._compiled_for = _spec(spec)

    def _step_for(self, batch):
        return self._compiled if self._compiled is not None and _spec(batch) == self._compiled_for else self.step_fn


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
        # Dropping and adding the device axis, per device and donated: the output reuses each input buffer (a reshape
        # is a bitcast), so the checkpoint's view of the state is the state's own memory.
        local_mesh = self.local.mesh
        self._local_replicated = NamedSharding(local_mesh, P())
        self._drop_axis = jax.jit(jax.shard_map(
            lambda tree: jax.tree_util.tree_map(lambda x: x.reshape(x.shape[1:]), tree), mesh=local_mesh,
            in_specs=P(AXIS), out_specs=P(), check_vma=False), donate_argnums=0, out_shardings=self._local_replicated)
        self._broadcast = jax.jit(lambda tree, n: jax.tree_util.tree_map(
            lambda x: jax.numpy.broadcast_to(x[None], (n,) + x.shape), tree), static_argnums=1,
            out_shardings=self.local)
        self._add_axis = jax.jit(jax.shard_map(
            lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree), mesh=local_mesh,
            in_specs=P(), out_specs=P(AXIS), check_vma=False), donate_argnums=0, out_shardings=self.local)

    def _replicate(self, tree):
        """Host values as (local devices, ...) arrays, a copy on every device, in buffers XLA owns: a host array put
        on a CPU device as it is can become that device's buffer without a copy, and the donated step cannot then
        reuse it (GRM-B/256: 1 GB more resident from the first step on)."""
        n = len(self.devices)
        return self._broadcast(jax.tree_util.tree_map(np.asarray, tree), n)

    def compile(self, state, batch: dict, key) -> None:
        """:meth:`_Runner.compile`, on one process only: pmap's ``lower()`` fails on several (jax 0.10.2), where
        the first call compiles instead."""
        if jax.process_count() == 1:
            super().compile(state, batch, key)

    def place_state(self, state):
        return self._replicate(state)

    def init_state(self, params, batch_stats, optimizer):
        """The step-0 state on the devices: ``params`` and ``batch_stats`` (host values) copied to every device and
        ``train.step.create_state`` run there per device (donated: the state takes over the copies), so no host copy
        of the optimizer's state exists. Equal to :meth:`place_state` of the state built on the host."""
        build = jax.jit(jax.vmap(lambda p, s: create_state(p, s, optimizer)), donate_argnums=(0, 1),
                        out_shardings=self.local)
        return build(self._replicate(params), self._replicate(batch_stats))

    def abstract_state(self, state):
        """``state`` (host arrays or shapes) as this runner places it, in ``jax.ShapeDtypeStruct`` leaves."""
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((len(self.devices),) + np.shape(x), x.dtype, sharding=self.local), state)

    def place_key(self, key):
        return self._replicate(key)

    def place_batch(self, batch: dict) -> dict:
        return jax.device_put(batch, self.local)

    def batch_spec(self, batch: dict) -> dict:
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.local), batch)

    def first_replica(self, tree):
        """This process's first device's values (leaves carry a leading device axis)."""
        return _first_shard(tree, drop_leading_axis=True)

    def global_state(self, state, per_device_stats: bool) -> dict:
        """The checkpointed tree as global arrays: step, params, opt_state and batch_stats (device 0's) replicated;
        with ``per_device_stats`` also ``batch_stats_per_device`` (global devices, ...) sharded over the axis.

        The tree takes over ``state``'s buffers: ``state`` is deleted (donated), and :meth:`local_state` of the tree
        gives the state back, again without a copy (copying cost GRM-B/256 1.2 GB for the time of each save)."""
        replicated = dict(step=state.step, params=state.params, opt_state=state.opt_state)
        if not per_device_stats:
            replicated["batch_stats"] = state.batch_stats
        tree = jax.tree_util.tree_map(self._global_from_local_replicated, self._drop_axis(replicated))
        if per_device_stats:
            per_device = jax.tree_util.tree_map(self._sharded_from_local, state.batch_stats)
            tree["batch_stats_per_device"] = per_device
            # device 0's statistics, replicated (a broadcast of a few kB from the process that holds device 0)
            tree["batch_stats"] = self._first_device(per_device)
        return tree

    def abstract_global_state(self, state, per_device_stats: bool) -> dict:
        """:meth:`global_state`'s shapes, dtypes and shardings as ``jax.ShapeDtypeStruct`` leaves, without the
        arrays: the restore target, from the placed state or its :meth:`abstract_state` (before the state exists)."""
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
        each to its device). Takes over ``tree``'s buffers (its replicated arrays are deleted)."""
        per_device = "batch_stats_per_device" in tree
        keys = ("step", "params", "opt_state") + (() if per_device else ("batch_stats",))
        local = self._add_axis({k: jax.tree_util.tree_map(self._local_replicated_from_global, tree[k]) for k in keys})
        batch_stats = (jax.tree_util.tree_map(self._local_from_sharded, tree["batch_stats_per_device"])
                       if per_device else local["batch_stats"])
        return state_type(step=local["step"], params=local["params"], batch_stats=batch_stats,
                          opt_state=local["opt_state"])

    def _global_from_local_replicated(self, x: jax.Array) -> jax.Array:
        """A replicated array over this process's devices as the same over every process's (no copy)."""
        shards = _by_device(x)
        return jax.make_array_from_single_device_arrays(x.shape, self.replicated, [shards[d] for d in self.devices])

    def _local_replicated_from_global(self, x: jax.Array) -> jax.Array:
        """This process's copies of a replicated global array as one array over its devices (no copy)."""
        shards = _by_device(x)
        return jax.make_array_from_single_device_arrays(x.shape, self._local_replicated,
                                                        [shards[d] for d in self.devices])

    def _sharded_from_local(self, x: jax.Array) -> jax.Array:
        shards = _by_device(x)
        shape = (len(self.mesh.devices.flat),) + x.shape[1:]
        return jax.make_array_from_single_device_arrays(shape, self.sharded, [shards[d] for d in self.devices])

    def _local_from_sharded(self, x: jax.Array) -> jax.Array:
        """This process's blocks of a (global devices, ...) array as its (local devices, ...) array (no copy)."""
        shards = _by_device(x)
        return jax.make_array_from_single_device_arrays((len(self.devices),) + x.shape[1:], self.local,
                                                        [shards[d] for d in self.devices])

    def __call__(self, state, batch, key):
        return self._step_for(batch)(state, batch, key)


class ShardMapRunner(_Runner):
    """``jax.jit(jax.shard_map(train_step))`` on a 1-D mesh over every process's devices; state replicated,
    batch sharded, state donated."""

    def __init__(self, model, optimizer, config, steps_per_epoch, devices):
        if not config.train.sync_batch_stats:  # on one device too: its step's BatchNorm output is then per device
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

    def init_state(self, params, batch_stats, optimizer):
        """The step-0 state, replicated: ``params`` and ``batch_stats`` (host values) placed and
        ``train.step.create_state`` run on the devices (see :meth:`PmapRunner.init_state`)."""
        build = jax.jit(lambda p, s: create_state(p, s, optimizer), donate_argnums=(0, 1),
                        out_shardings=self.replicated)
        return build(self.place_state(params), self.place_state(batch_stats))

    def abstract_state(self, state):
        """``state`` (host arrays or shapes) as this runner places it, in ``jax.ShapeDtypeStruct`` leaves."""
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.replicated),
                                      state)

    def place_key(self, key):
        return self._global_replicated(key)

    def place_batch(self, batch: dict) -> dict:
        """This process's (local devices, b, ...) batch as its part of the global (devices, b, ...) batch."""
        return jax.tree_util.tree_map(
            lambda x: x if isinstance(x, jax.Array) else jax.make_array_from_process_local_data(self.sharded, x), batch)

    def batch_spec(self, batch: dict) -> dict:
        """The global (devices, b, ...) batch that :meth:`place_batch` makes of this process's ``batch``."""
        count = len(self.mesh.devices.flat)
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((np.shape(x)[0] * count // len(self.devices),) + np.shape(x)[1:], x.dtype,
                                           sharding=self.sharded), batch)

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
        batch = self.place_batch(batch)
        return self._step_for(batch)(state, batch, key)


RUNNERS = {"pmap": PmapRunner, "shard_map": ShardMapRunner}
