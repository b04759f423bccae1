"""grm_jax.train.loop.initial_variables / init_train_state: the init checkpoint and the optional initialisations
(``config.train.divide_init_bias``, ``config.train.pos_embed_init``)."""

from __future__ import annotations

import jax
import numpy as np

from grm_jax import checkpoints
from grm_jax.convert.pos_embed import resize_pos_embed, sincos_pos_embed
from grm_jax.models import build_model
from grm_jax.train.loop import init_train_state, initial_variables
from grm_jax.train.optimizer import make_optimizer
from helpers import load_config, tiny_inputs


def _state(bias):
    config = load_config("tiny")
    config.train.divide_init_bias = bias
    model = build_model(config)
    return model, init_train_state(config, model, lambda p: make_optimizer(config, p, 10))


def test_divide_init_bias_moves_only_the_interact_logit(tiny_outputs):
    model, official = _state(0.0)
    _, biased = _state(3.0)
    moved = []
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(official.params),
                            jax.tree_util.tree_leaves(biased.params)):
        if not np.array_equal(a, b):
            moved.append(jax.tree_util.keystr(path))
            np.testing.assert_allclose(np.asarray(b) - np.asarray(a), [0.0, 3.0], atol=1e-6)  # float32 of 3
    assert len(moved) == 3 and all("divide_predict_4']['bias']" in p for p in moved)  # one per division layer
    # In the model: every token's gap l1 - l0 in the first division layer moves by the bias (log_softmax keeps
    # differences; 1e-5: float32 rounding). Later layers see other decisions upstream, so only the first is exact.
    z, x, mask = tiny_inputs(tiny_outputs)
    gaps = []
    for state in (official, biased):
        out = model.apply({"params": state.params, "batch_stats": state.batch_stats}, z, x, mask, train=False)
        gaps.append(np.asarray(out["divide_logp"][..., 1] - out["divide_logp"][..., 0]))
    np.testing.assert_allclose(gaps[1][0] - gaps[0][0], 3.0, atol=1e-5)


def test_sincos_pos_embed_init_sets_only_the_position_tables():
    config = load_config("tiny")
    model = build_model(config)
    fresh = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    config.train.pos_embed_init = "sincos"
    sincos = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    moved = [jax.tree_util.keystr(path) for (path, a), b in
             zip(jax.tree_util.tree_leaves_with_path(fresh.params), jax.tree_util.tree_leaves(sincos.params))
             if not np.array_equal(a, b)]
    assert sorted(moved) == sorted(f"['backbone']['{n}']" for n in ("pos_embed", "pos_embed_x", "pos_embed_z"))
    backbone = sincos.params["backbone"]
    m = config.model
    table = sincos_pos_embed(m.embed_dim, m.pos_embed_grid)
    np.testing.assert_array_equal(backbone["pos_embed"], table)
    # The search grid (8 x 8) resized from the 14 x 14 table as finetune_track resizes a pretrained one.
    np.testing.assert_array_equal(backbone["pos_embed_x"], resize_pos_embed(table, (14, 14), (8, 8)))
    assert np.asarray(backbone["pos_embed_z"]).shape == (1, 16, m.embed_dim)


def test_init_checkpoint_brings_its_own_weights_and_position_tables(tmp_path):
    # train.init_checkpoint replaces the fresh variables; pos_embed_init does not overwrite the tables it brings.
    config = load_config("tiny")
    model = build_model(config)
    stored = initial_variables(config, model)
    stored = {**stored, "params": jax.tree.map(lambda p: np.asarray(p) + 1.0, stored["params"])}
    checkpoints.save_variables(tmp_path / "init", stored, config)
    config.train.init_checkpoint = str(tmp_path / "init")
    config.train.pos_embed_init = "sincos"
    start = initial_variables(config, model)
    for a, b in zip(jax.tree.leaves(stored["params"]), jax.tree.leaves(start["params"])):
        np.testing.assert_array_equal(a, b)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    np.testing.assert_array_equal(state.params["backbone"]["pos_embed_x"], stored["params"]["backbone"]["pos_embed_x"])
