"""GRM forward, train pass and gradients against the official PyTorch numbers (``fixtures/official/grm_tiny``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from grm_jax import losses
from grm_jax.convert.state_dict import flax_path_to_torch, torch_to_flax_array
from grm_jax.models import build_model, host_init, relation, sample_keys, to_official_layout
from helpers import load_config, tiny_inputs

EVAL_KEYS = ("pred_boxes", "score_map", "size_map", "offset_map", "backbone_out", "divide_logp")
# float32 rounding through 4 blocks and the head: observed ≤ 7e-6 abs; the parity target is 1e-5 abs.
ATOL = 1e-5


@pytest.mark.parametrize("tag,threshold", [("t0", 0.0), ("t0p4", 0.4)])
def test_eval_matches_official(tiny_model_and_variables, tiny_outputs, tag, threshold):
    model, variables = tiny_model_and_variables
    z, x, mask = tiny_inputs(tiny_outputs)
    out = to_official_layout(model.apply(variables, z, x, mask, threshold=threshold))
    for key in EVAL_KEYS:
        ref = tiny_outputs[f"eval_{tag}_{key}"]
        assert out[key].shape == ref.shape, key
        np.testing.assert_allclose(np.asarray(out[key]), ref, rtol=0, atol=ATOL, err_msg=key)
    # Decisions are discrete; the reference margin is ≥ 4e-3 in log-prob, far above float32 noise: exact.
    np.testing.assert_array_equal(np.asarray(out["decisions"]), tiny_outputs[f"eval_{tag}_decisions"])


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.4, 0.6])
def test_threshold_selects_tokens(tiny_model_and_variables, tiny_outputs, threshold):
    """Each layer's decisions follow τ on that run's own division log-probabilities: argmax at τ = 0, else a token
    interacts iff p0 = exp(ℓ0) < τ (docs/model.md#inference-threshold); and τ changes which tokens interact."""
    model, variables = tiny_model_and_variables
    z, x, mask = tiny_inputs(tiny_outputs)
    out = to_official_layout(model.apply(variables, z, x, mask, threshold=threshold))
    logp, decisions = np.asarray(out["divide_logp"]), np.asarray(out["decisions"])
    interact = np.exp(logp[..., 0]) < threshold if threshold else logp[..., 1] > logp[..., 0]
    np.testing.assert_array_equal(decisions, interact.astype(decisions.dtype))
    argmax = to_official_layout(model.apply(variables, z, x, mask, threshold=0.0))["decisions"]
    assert threshold == 0.0 or not np.array_equal(decisions, np.asarray(argmax))


def _train_pass(model, variables, outputs):
    z, x, mask = tiny_inputs(outputs)
    noise = jnp.asarray(outputs["train_gumbel_noise"])

    def loss_fn(params):
        out, new_state = model.apply({**variables, "params": params}, z, x, mask, train=True, gumbel_noise=noise,
                                     mutable=["batch_stats"])
        total, status = losses.grm_loss(out["pred_boxes"], out["score_map"], jnp.asarray(outputs["search_box"]),
                                        search_size=model.config.search_size)
        return total, (out, new_state, status)

    return jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])


@pytest.fixture(scope="module")
def train_result(tiny_model_and_variables, tiny_outputs):
    model, variables = tiny_model_and_variables
    return _train_pass(model, variables, tiny_outputs)


def test_train_outputs_match_official(train_result, tiny_outputs):
    (_, (out, _, _)), _ = train_result
    out = to_official_layout(out)
    # Gumbel decisions with the reference noise: exact (one-hot up to the straight-through rounding).
    np.testing.assert_array_equal(np.asarray(out["decisions"]), tiny_outputs["train_decisions_onehot"].argmax(-1))
    # Ratios are means of 0/1 values over 64 tokens: exact up to the ±1 ulp of the straight-through sum.
    np.testing.assert_allclose(np.asarray(out["interaction_ratio"]), tiny_outputs["train_decision_ratios"],
                               rtol=0, atol=1e-6)
    for key in EVAL_KEYS:
        np.testing.assert_allclose(np.asarray(out[key]), tiny_outputs[f"train_{key}"], rtol=0, atol=ATOL,
                                   err_msg=key)


def test_train_losses_match_official(train_result, tiny_outputs):
    (total, (_, _, status)), _ = train_result
    # Loss terms: float32 sums over a few hundred cells; parity target 1e-5 relative.
    np.testing.assert_allclose(float(total), tiny_outputs["train_loss_total"], rtol=1e-5)
    for key in ("total", "giou", "l1", "loc"):
        np.testing.assert_allclose(float(status[f"Ls/{key}"]), tiny_outputs[f"train_status_Ls_{key}"], rtol=1e-5,
                                   err_msg=key)
    np.testing.assert_allclose(float(status["IoU"]), tiny_outputs["train_status_IoU"], rtol=1e-5)


def test_batchnorm_running_stats_match_official(train_result, tiny_outputs):
    (_, (_, new_state, _)), _ = train_result
    stats = new_state["batch_stats"]["box_head"]["conv1_ctr_1"]
    # Running mean/var after one momentum-0.1 update with PyTorch's unbiased variance: float32 rounding, 1e-5.
    np.testing.assert_allclose(stats["mean"], tiny_outputs["train_bn_conv1_ctr_running_mean_after"], atol=1e-5)
    np.testing.assert_allclose(stats["var"], tiny_outputs["train_bn_conv1_ctr_running_var_after"], atol=1e-5)
    assert int(stats["num_batches_tracked"]) == 1


def test_gradients_match_official(train_result, tiny_outputs):
    _, grads = train_result
    flat = {flax_path_to_torch("params", path): leaf for path, leaf in traverse_util.flatten_dict(grads).items()}
    keys = [k[len("grad_"):] for k in tiny_outputs if k.startswith("grad_")]
    assert len(keys) == 11
    for key in keys:
        ref = tiny_outputs[f"grad_{key}"]
        ours = np.asarray(flat[key])
        ref_flax = torch_to_flax_array(key, ref)
        # Relative error of the whole tensor (‖ours − ref‖ / ‖ref‖): gradients pass through the straight-through
        # mask and 4 blocks; the parity target is 1e-4.
        rel = np.linalg.norm(ours - ref_flax) / np.linalg.norm(ref_flax)
        assert rel <= 1e-4, (key, rel)


def _divide_grad_norm(grads, expected_leaves: int | None = None) -> float:
    """‖gradient of the division MLPs (divide_predict_*)‖ as one vector."""
    flat = traverse_util.flatten_dict(grads)
    leaves = [leaf for path, leaf in flat.items() if path[-2].startswith("divide_predict")]
    assert leaves and (expected_leaves is None or len(leaves) == expected_leaves), len(leaves)
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(leaf))) for leaf in leaves)))


def test_division_mlp_learns_only_through_the_mask(tiny_model_and_variables, tiny_outputs, monkeypatch):
    """Non-zero gradient reaches divide_predict; cutting the mask's gradient makes it exactly zero."""
    model, variables = tiny_model_and_variables

    def divide_grad_norm():
        _, grads = _train_pass(model, variables, tiny_outputs)
        return _divide_grad_norm(grads, expected_leaves=3 * 2 * (model.config.depth - 1))

    assert divide_grad_norm() > 0
    original = relation.policy_attention  # the masked attention, whose mask the decisions build
    monkeypatch.setattr(relation, "policy_attention",
                        lambda logits, decision, v, nz: original(logits, jax.lax.stop_gradient(decision), v, nz))
    jax.clear_caches()  # traced forms are cached per function: trace it anew
    assert divide_grad_norm() == 0.0
    monkeypatch.undo()
    jax.clear_caches()  # and drop the cut form again: later tests in this process would trace it from the cache


def test_threshold_does_not_recompile(tiny_model_and_variables, tiny_outputs):
    model, variables = tiny_model_and_variables
    z, x, mask = tiny_inputs(tiny_outputs)
    traces = []

    @jax.jit
    def forward(threshold):
        traces.append(1)
        return model.apply(variables, z, x, mask, threshold=threshold)["decisions"]

    results = [np.asarray(forward(jnp.float32(t))) for t in (0.0, 0.4, 0.55, 0.6)]
    assert len(traces) == 1
    # Different thresholds gave different decisions through the same program.
    assert not np.array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0].argmax(-1), tiny_outputs["eval_t0_decisions"])
    np.testing.assert_array_equal(results[1].argmax(-1), tiny_outputs["eval_t0p4_decisions"])


def test_wrong_input_shape_names_the_input(tiny_model_and_variables, tiny_outputs):
    model, variables = tiny_model_and_variables
    z, x, mask = tiny_inputs(tiny_outputs)
    with pytest.raises(ValueError, match="'search' has shape \\(2, 3, 128, 128\\)"):
        model.apply(variables, z, jnp.transpose(x, (0, 3, 1, 2)), mask)
    with pytest.raises(ValueError, match="'template'"):
        model.apply(variables, x, x, mask)
    with pytest.raises(ValueError, match="'gumbel_noise'"):
        model.apply(variables, z, x, mask, train=True, gumbel_noise=jnp.zeros((2, 2, 64, 2)),
                    mutable=["batch_stats"])


def test_train_mode_draws_gumbel_and_droppath_from_the_sample_keys(tiny_outputs):
    """Every layer's draws come from the per-sample keys: same keys, same pass; another sample's key changes that
    sample only; no keys (and no recorded noise) is an error that says what to pass."""
    config = load_config("tiny")
    config.model.drop_path_rate = 0.5
    model = build_model(config)
    z, x, mask = tiny_inputs(tiny_outputs)
    variables = model.init(jax.random.PRNGKey(0), z, x, mask)

    def run(ids, seed=0):
        keys = sample_keys(jax.random.PRNGKey(seed), 3, jnp.asarray(ids))
        out, _ = model.apply(variables, z, x, mask, train=True, sample_keys=keys, mutable=["batch_stats"])
        return out

    a, b, c = run([0, 1]), run([0, 1]), run([0, 7])
    np.testing.assert_array_equal(a["backbone_out"], b["backbone_out"])  # same keys → same pass
    np.testing.assert_array_equal(a["decisions"][:, 0], c["decisions"][:, 0])  # sample 0's draws: its own key
    assert not np.array_equal(a["decisions"][:, 1], c["decisions"][:, 1])  # sample 1 got another key
    assert not np.array_equal(a["decisions"], run([0, 1], seed=1)["decisions"])  # another seed
    with pytest.raises(ValueError, match="sample_keys"):
        model.apply(variables, z, x, mask, train=True, mutable=["batch_stats"])


def test_gumbel_scale_zero_trains_with_the_eval_division(tiny_model_and_variables, tiny_outputs):
    """config.train.gumbel_scale = 0 reaches every division layer: the train pass then divides the tokens as the
    tracker does (argmax ℓ), layer by layer; the official s = 1 draws another division from the same keys."""
    _, variables = tiny_model_and_variables
    config = load_config("tiny")
    config.model.drop_path_rate = 0.0
    config.train.gumbel_scale = 0.0
    model = build_model(config)
    assert model.config.gumbel_scale == 0.0
    z, x, mask = tiny_inputs(tiny_outputs)
    keys = sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(z.shape[0]))
    train, _ = model.apply(variables, z, x, mask, train=True, sample_keys=keys, mutable=["batch_stats"])
    evaluated = model.apply(variables, z, x, mask, threshold=0.0)
    np.testing.assert_array_equal(np.asarray(to_official_layout(train)["decisions"]),
                                  np.asarray(to_official_layout(evaluated)["decisions"]))
    config.train.gumbel_scale = 1.0
    official, _ = build_model(config).apply(variables, z, x, mask, train=True, sample_keys=keys,
                                            mutable=["batch_stats"])
    assert not np.array_equal(np.asarray(to_official_layout(official)["decisions"]),
                              np.asarray(to_official_layout(evaluated)["decisions"]))


def test_division_grad_clip_bounds_the_decisions_gradient_and_leaves_the_forward(tiny_outputs):
    """config.train.division_grad_clip = c reaches every division layer: the train pass computes the same numbers,
    and the gradient into the division MLPs is that of decisions whose cotangent is clipped to [−c, c] — with a
    tiny c it is far smaller than the official one; the box head's gradient does not change. Seeded initial
    weights (division logits near 0, where the straight-through gradient is not 0)."""
    z, x, mask = tiny_inputs(tiny_outputs)
    keys = sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(z.shape[0]))

    def run(clip):
        config = load_config("tiny")
        config.model.drop_path_rate = 0.0
        config.train.division_grad_clip = clip
        model = build_model(config)
        assert model.config.division_grad_clip == clip
        variables = host_init(model, z, x, seed=3)

        def loss(params):
            out, _ = model.apply({**variables, "params": params}, z, x, mask, train=True, sample_keys=keys,
                                 mutable=["batch_stats"])
            return jnp.sum(out["score_map"] ** 2), out

        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return out, grads

    official, official_grads = run(0.0)
    clipped, clipped_grads = run(1e-9)
    np.testing.assert_array_equal(np.asarray(official["score_map"]), np.asarray(clipped["score_map"]))
    assert _divide_grad_norm(official_grads) > 0
    assert _divide_grad_norm(clipped_grads) < 1e-3 * _divide_grad_norm(official_grads)
    # the box head sees the same forward pass, so its gradient is the same (float32 rounding of another program)
    for a, b in zip(jax.tree_util.tree_leaves(official_grads["box_head"]),
                    jax.tree_util.tree_leaves(clipped_grads["box_head"])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
