"""grm_jax.train.parallel: the restore target each runner describes without arrays, the checkpoint's view of the
state without copies, the step-0 state built on the devices, and the step compiled ahead from shapes.

One device here; several devices and processes run these paths in tests/train/test_loop.py and
tests/train/test_multiprocess.py (subprocesses)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from grm_jax.models import build_model
from grm_jax.train.loop import abstract_train_state, init_train_state
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.parallel import RUNNERS
from grm_jax.train.step import AXIS, TrainState
from helpers import load_config


def _abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _setup(parallel):
    config = load_config("tiny")
    config.train.sync_batch_stats = parallel == "shard_map"  # which that runner needs
    model = build_model(config, bn_axis_name=AXIS if config.train.sync_batch_stats else None)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    optimizer = make_optimizer(config, state.params, 10)
    return config, state, optimizer, RUNNERS[parallel](model, optimizer, config, 10, jax.local_devices())


def _batch(config, seed=0, batch=2):
    m, rng = config.model, np.random.default_rng(seed)
    grid = (m.template_size // m.patch_size) ** 2
    return dict(template=rng.normal(size=(1, batch, m.template_size, m.template_size, 3)).astype(np.float32),
                search=rng.normal(size=(1, batch, m.search_size, m.search_size, 3)).astype(np.float32),
                template_mask=np.ones((1, batch, grid), np.float32),
                search_anno=np.tile(np.float32([0.3, 0.3, 0.25, 0.3]), (1, batch, 1)))


def _host(runner, tree):
    """A host copy (a NumPy view of a CPU buffer would keep the buffer from being donated)."""
    return jax.tree_util.tree_map(np.array, runner.first_replica(tree))


def _pointers(tree):
    return [x.addressable_shards[0].data.unsafe_buffer_pointer() for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("parallel", sorted(RUNNERS))
@pytest.mark.parametrize("per_device_stats", [False, True])
def test_abstract_global_state_describes_global_state(parallel, per_device_stats):
    config, state, optimizer, runner = _setup(parallel)
    placed = runner.place_state(state)
    abstract = runner.abstract_global_state(placed, per_device_stats)
    # the same from shapes alone, before any state exists
    assert runner.abstract_global_state(runner.abstract_state(abstract_train_state(
        dict(params=state.params, batch_stats=state.batch_stats), optimizer)), per_device_stats) == abstract
    concrete = runner.global_state(placed, per_device_stats)
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(concrete)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(abstract))
    assert jax.tree_util.tree_leaves(abstract) == jax.tree_util.tree_leaves(_abstract(concrete))
    # and it restores: the concrete tree's local layout is the placed state's
    restored = runner.local_state(concrete, TrainState)
    assert jax.tree_util.tree_leaves(_abstract(restored)) == jax.tree_util.tree_leaves(runner.abstract_state(state))


@pytest.mark.parametrize("per_device_stats", [False, True])
def test_pmap_checkpoint_view_is_the_state_own_memory(per_device_stats):
    """global_state → local_state hands the state's buffers over and back: the same values, the same memory, and
    the state passed in is gone (a save holds one copy of the state, not two)."""
    config, state, optimizer, runner = _setup("pmap")
    placed = runner.place_state(state)
    before, pointers = _host(runner, placed), _pointers(placed)
    tree = runner.global_state(placed, per_device_stats)
    assert all(x.is_deleted() for x in jax.tree_util.tree_leaves(placed.params))
    back = runner.local_state(tree, TrainState)
    assert _pointers(back) == pointers  # exact: no leaf was copied on the way (CPU: a reshape is a bitcast)
    after = _host(runner, back)
    jax.tree_util.tree_map(np.testing.assert_array_equal, after, before)  # bit for bit


@pytest.mark.parametrize("parallel", sorted(RUNNERS))
def test_init_state_equals_the_placed_host_state(parallel):
    config, state, optimizer, runner = _setup(parallel)
    placed = runner.place_state(state)
    built = runner.init_state(state.params, state.batch_stats, optimizer)
    assert jax.tree_util.tree_structure(built) == jax.tree_util.tree_structure(placed)
    assert jax.tree_util.tree_leaves(_abstract(built)) == jax.tree_util.tree_leaves(_abstract(placed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, _host(runner, built), _host(runner, placed))


def test_pmap_step_reuses_the_placed_buffers():
    """The donated step writes the new state into the placed state's buffers. A host array put on a CPU device as
    it is may become the device buffer itself, which the step cannot reuse (measured: none of 423 reused, GRM-B/256
    1 GB more resident); placement therefore copies into buffers XLA owns."""
    config, state, optimizer, runner = _setup("pmap")
    placed = runner.place_state(state)
    host_pointers = {np.asarray(x).ctypes.data for x in jax.tree_util.tree_leaves(state)}
    pointers = _pointers(placed)
    assert not host_pointers & set(pointers)
    new, metrics = runner(placed, _batch(config), runner.place_key(jax.random.PRNGKey(0)))
    jax.block_until_ready(metrics)
    reused = set(_pointers(new)) & set(pointers)
    assert len(reused) >= 0.8 * len(pointers), f"{len(reused)} of {len(pointers)} buffers reused"


@pytest.mark.parametrize("parallel", sorted(RUNNERS))
def test_step_compiled_ahead_from_shapes_equals_the_jit_call(parallel):
    config, state, optimizer, runner = _setup(parallel)
    _, _, _, plain = _setup(parallel)
    key, batch = runner.place_key(jax.random.PRNGKey(0)), _batch(config)
    shapes = runner.abstract_state(abstract_train_state(dict(params=state.params, batch_stats=state.batch_stats),
                                                        optimizer))
    runner.compile(shapes, batch, key)
    ahead, ahead_metrics = runner(runner.place_state(state), batch, key)
    called, called_metrics = plain(plain.place_state(state), batch, key)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _host(runner, ahead), _host(plain, called))
    jax.tree_util.tree_map(np.testing.assert_array_equal, _host(runner, ahead_metrics), _host(plain, called_metrics))
    # a batch of another shape is not refused: it compiles its own program, as without compile()
    other, _ = runner(ahead, _batch(config, batch=1), key)
    assert jax.tree_util.tree_leaves(_abstract(other)) == jax.tree_util.tree_leaves(_abstract(ahead))


def test_shard_map_runner_needs_synchronised_batch_stats():
    config = load_config("tiny")
    model = build_model(config)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    with pytest.raises(ValueError, match="sync_batch_stats"):
        RUNNERS["shard_map"](model, make_optimizer(config, state.params, 10), config, 10, jax.local_devices())
