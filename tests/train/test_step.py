"""grm_jax.train.step: the optional division terms (entropy, ratio, logit bound, box supervision) enter the
objective the train step differentiates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import losses
from grm_jax.models import build_model, example_inputs, host_init, sample_keys
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import AXIS, create_state, make_train_step
from helpers import load_config, tiny_inputs


def _setup(tiny_outputs, **train):
    """The tiny GRM without DropPath, its initial train state and one batch of the tiny fixture."""
    config = load_config("tiny")
    config.model.drop_path_rate = 0.0
    config.train.update(train)
    model = build_model(config)
    z, x, mask = tiny_inputs(tiny_outputs)
    variables = host_init(model, z, x, seed=0)
    optimizer = make_optimizer(config, variables["params"], 10)
    state = create_state(variables["params"], variables["batch_stats"], optimizer)
    batch = dict(template=z, search=x, template_mask=mask, search_anno=jnp.asarray(tiny_outputs["search_box"]))
    return config, model, variables, optimizer, state, batch


def _step(tiny_outputs, **train):
    config, model, variables, optimizer, state, batch = _setup(tiny_outputs, **train)
    new_state, metrics = jax.jit(make_train_step(model, optimizer, config, 10, axis_name=None))(
        state, batch, jax.random.PRNGKey(0))
    return model, variables, batch, new_state, metrics


TERMS = {"Ls/entropy": (dict(entropy_weight=1.0),
                        lambda out, b: losses.division_entropy_loss(out["interaction_ratio"])),
         "Ls/ratio": (dict(ratio_weight=2.0, ratio_target=0.2),
                      lambda out, b: 2.0 * losses.division_ratio_loss(out["divide_logp"], 0.2)),
         "Ls/logit": (dict(logit_weight=0.01), lambda out, b: 0.01 * losses.division_logit_loss(out["divide_logp"])),
         "Ls/box_division": (dict(box_division_weight=0.5, box_division_margin=1.0),  # 8×8 search tokens
                             lambda out, b: 0.5 * losses.division_box_loss(out["divide_logp"], b["search_anno"], 8,
                                                                            1.0))}


@pytest.mark.parametrize("name", list(TERMS))
def test_division_term_enters_the_objective(tiny_outputs, name):
    settings, weighted_term = TERMS[name]
    model, variables, batch, off_state, off = _step(tiny_outputs)
    _, _, _, on_state, on = _step(tiny_outputs, **settings)
    assert name not in off
    # The same pass with the step's keys: its interaction ratios give the term the step must have added.
    keys = sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(batch["search"].shape[0]))
    out, _ = model.apply(variables, batch["template"], batch["search"], batch["template_mask"], train=True,
                         sample_keys=keys, mutable=["batch_stats"])
    expected = float(weighted_term(out, batch))
    weight = next(v for k, v in settings.items() if k.endswith("_weight"))
    np.testing.assert_allclose(weight * float(on[name]), expected, rtol=1e-6)  # float32 rounding
    np.testing.assert_allclose(float(on["Ls/total"]), float(off["Ls/total"]) + expected, rtol=1e-6)
    # The term has a gradient: the division MLPs move differently with it.
    divide = lambda p: p["backbone"]["blocks_1"]["attn"]["divide_predict_4"]["kernel"]
    assert not np.allclose(divide(on_state.params), divide(off_state.params), rtol=0, atol=1e-9)


def test_batched_update_equals_the_plain_one():
    """apply_optimizer(batched=True), the pmap runner's form (the update under vmap over an added axis of 1), gives
    the plain update's parameters and moments to float32 rounding (≤ 1e-6 relative per leaf; XLA may fuse the two
    programs differently)."""
    from grm_jax.train.step import apply_optimizer

    config = load_config("tiny")
    model = build_model(config)
    params = host_init(model, *example_inputs(config, 1), seed=0)["params"]
    optimizer = make_optimizer(config, params, 10)
    rng = np.random.default_rng(0)
    grads = jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    opt_state = optimizer.init(params)
    plain = jax.jit(lambda g, s, p: apply_optimizer(optimizer, g, s, p))(grads, opt_state, params)
    batched = jax.jit(lambda g, s, p: apply_optimizer(optimizer, g, s, p, batched=True))(grads, opt_state, params)
    assert jax.tree_util.tree_structure(plain) == jax.tree_util.tree_structure(batched)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(batched)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape
        assert np.linalg.norm(a - b) <= 1e-6 * max(np.linalg.norm(a), 1e-30)
    moved = sum(np.abs(np.asarray(a) - np.asarray(p)).sum()
                for a, p in zip(jax.tree_util.tree_leaves(plain[0]), jax.tree_util.tree_leaves(params)))
    assert moved > 0  # the update did something


def test_one_device_axis_has_no_all_reduce(tiny_outputs):
    """The step averages gradients and metrics over the device axis only where it has several devices: on one
    device the mean is the identity, and the compiled pmap program holds no all-reduce (XLA's CPU all-reduce of one
    participant copies every gradient); over an axis of 2 (vmap) the step still takes the mean (psum in its
    program), and the one-device pmap step gives the plain jit step's parameters exactly."""
    config, model, _, optimizer, state, batch = _setup(tiny_outputs)
    key = jax.random.PRNGKey(0)
    lead = lambda tree, n=1: jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), tree)

    pmapped = jax.pmap(make_train_step(model, optimizer, config, 10), axis_name=AXIS, devices=jax.local_devices()[:1])
    assert "all-reduce" not in pmapped.lower(lead(state), lead(batch), lead(key)).compile().as_text()
    two = jax.make_jaxpr(jax.vmap(make_train_step(model, optimizer, config, 10), axis_name=AXIS))(
        lead(state, 2), lead(batch, 2), lead(key, 2))
    assert "psum" in str(two)

    # axis_name=None and batched_update=False take the same arithmetic as the pmap step on one device
    single, _ = jax.jit(make_train_step(model, optimizer, config, 10, axis_name=None))(state, batch, key)
    replicated, _ = pmapped(lead(state), lead(batch), lead(key))
    for a, b in zip(jax.tree_util.tree_leaves(single.params), jax.tree_util.tree_leaves(replicated.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[0])
