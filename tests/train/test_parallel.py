"""grm_jax.train.parallel: the restore target each runner describes without arrays is the checkpointed tree's
shapes, dtypes and shardings."""

from __future__ import annotations

import jax
import pytest

from grm_jax.models import build_model
from grm_jax.train.loop import init_train_state
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.parallel import RUNNERS
from grm_jax.train.step import TrainState
from helpers import load_config


def _abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@pytest.mark.parametrize("parallel", sorted(RUNNERS))
@pytest.mark.parametrize("per_device_stats", [False, True])
def test_abstract_global_state_describes_global_state(parallel, per_device_stats):
    config = load_config("tiny")
    model = build_model(config)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    runner = RUNNERS[parallel](model, make_optimizer(config, state.params, 10), config, 10, jax.local_devices())
    placed = runner.place_state(state)
    abstract = runner.abstract_global_state(placed, per_device_stats)
    concrete = runner.global_state(placed, per_device_stats)
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(concrete)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(abstract))
    assert jax.tree_util.tree_leaves(abstract) == jax.tree_util.tree_leaves(_abstract(concrete))
    # and it restores: the concrete tree's local layout is the placed state's
    restored = runner.local_state(concrete, TrainState)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, restored, placed))
