"""``config.train.remat = "block"``: rematerialised ViT blocks compute what the plain ones compute."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax.models import build_model, example_inputs, host_init, sample_keys
from helpers import load_config


def _loss_and_grads(remat: str):
    config = load_config("tiny")
    config.model.drop_path_rate = 0.2  # DropPath on: its masks must be drawn the same inside the remat
    config.train.remat = remat
    model = build_model(config)
    variables = host_init(model, *example_inputs(config), seed=3)
    rng = np.random.default_rng(0)
    template = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    search = jnp.asarray(rng.normal(size=(2, 128, 128, 3)), jnp.float32)
    keys = sample_keys(jax.random.PRNGKey(1), 0, jnp.arange(2))

    def loss(params):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, template, search,
                             train=True, sample_keys=keys, mutable=["batch_stats"])
        return jnp.sum(out["score_map"] ** 2) + jnp.sum(out["size_map"]), out["interaction_ratio"]

    (value, ratio), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return value, ratio, grads, variables["params"]


def test_block_remat_changes_nothing_but_memory():
    plain, remat = _loss_and_grads("none"), _loss_and_grads("block")
    assert jax.tree_util.tree_structure(plain[3]) == jax.tree_util.tree_structure(remat[3])  # same parameters
    np.testing.assert_allclose(remat[0], plain[0], rtol=1e-6)  # same forward: float32 rounding at most
    np.testing.assert_array_equal(remat[1], plain[1])  # same token decisions (same Gumbel and DropPath draws)
    flat_plain, flat_remat = jax.tree_util.tree_leaves(plain[2]), jax.tree_util.tree_leaves(remat[2])
    diff = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(flat_plain, flat_remat)))
    norm = np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in flat_plain))
    assert diff / norm <= 1e-5, diff / norm  # recomputed activations: float32 fusion differences only
