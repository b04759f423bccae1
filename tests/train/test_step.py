"""grm_jax.train.step: the optional division-entropy term enters the objective the train step differentiates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import losses
from grm_jax.models import build_model, host_init, sample_keys
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import create_state, make_train_step
from helpers import load_config, tiny_inputs


def _step(tiny_outputs, entropy_weight: float):
    config = load_config("tiny")
    config.model.drop_path_rate = 0.0
    config.train.entropy_weight = entropy_weight
    model = build_model(config)
    z, x, mask = tiny_inputs(tiny_outputs)
    variables = host_init(model, z, x, seed=0)
    optimizer = make_optimizer(config, variables["params"], 10)
    state = create_state(variables["params"], variables["batch_stats"], optimizer)
    batch = dict(template=z, search=x, template_mask=mask, search_anno=jnp.asarray(tiny_outputs["search_box"]))
    new_state, metrics = jax.jit(make_train_step(model, optimizer, config, 10, axis_name=None))(
        state, batch, jax.random.PRNGKey(0))
    return model, variables, batch, new_state, metrics


def test_entropy_weight_adds_the_official_term(tiny_outputs):
    model, variables, batch, off_state, off = _step(tiny_outputs, 0.0)
    _, _, _, on_state, on = _step(tiny_outputs, 1.0)
    assert "Ls/entropy" not in off
    # The same pass with the step's keys: its interaction ratios give the term the step must have added.
    keys = sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(batch["search"].shape[0]))
    out, _ = model.apply(variables, batch["template"], batch["search"], batch["template_mask"], train=True,
                         sample_keys=keys, mutable=["batch_stats"])
    expected = float(losses.division_entropy_loss(out["interaction_ratio"]))
    np.testing.assert_allclose(float(on["Ls/entropy"]), expected, rtol=1e-6)  # float32 rounding
    np.testing.assert_allclose(float(on["Ls/total"]), float(off["Ls/total"]) + expected, rtol=1e-6)
    # The term has a gradient: the division MLPs move differently with it.
    divide = lambda p: p["backbone"]["blocks_1"]["attn"]["divide_predict_4"]["kernel"]
    assert not np.allclose(divide(on_state.params), divide(off_state.params), rtol=0, atol=1e-9)
