"""Pure functions of the generalized relation module (docs/model.md#division-module to #masked-softmax)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.models import relation
from helpers import tiny_inputs


def _policy(decision_classes, num_template):
    """Policy from per-search-token classes (0 = search-only, 1 = interacts)."""
    d = jax.nn.one_hot(jnp.asarray(decision_classes), 2)
    return relation.token_policy(d, num_template)


def test_mask_visibility_rules():
    """T sees T∪A, S sees S∪A, A sees everything; every token sees itself."""
    nz, classes = 2, np.array([[0, 1, 0, 1]])
    mask = np.asarray(relation.attention_mask(_policy(classes, nz)))[0, 0]
    category = np.array(["T", "T"] + ["S" if c == 0 else "A" for c in classes[0]])
    allowed = {"T": {"T", "A"}, "S": {"S", "A"}, "A": {"T", "S", "A"}}
    for i, qi in enumerate(category):
        for j, kj in enumerate(category):
            expected = 1.0 if (kj in allowed[qi] or i == j) else 0.0
            assert mask[i, j] == expected, (i, j, qi, kj)


def test_mask_degenerate_cases():
    """No A tokens: two-stream (block-diagonal); all A: the ordinary one-stream attention (all ones)."""
    nz, ns = 3, 5
    none = np.asarray(relation.attention_mask(_policy(np.zeros((1, ns), int), nz)))[0, 0]
    expected = np.zeros((nz + ns, nz + ns))
    expected[:nz, :nz] = 1
    expected[nz:, nz:] = 1
    np.testing.assert_array_equal(none, expected)
    everything = np.asarray(relation.attention_mask(_policy(np.ones((1, ns), int), nz)))[0, 0]
    np.testing.assert_array_equal(everything, np.ones((nz + ns, nz + ns)))


def test_diagonal_is_forced_for_soft_policies():
    """M ← M + (1 − M)·I sets the diagonal to exactly 1 whatever the (non-exact) policy values."""
    policy = jax.random.dirichlet(jax.random.PRNGKey(0), jnp.ones(3), (2, 7))
    mask = np.asarray(relation.attention_mask(policy))
    np.testing.assert_allclose(np.diagonal(mask, axis1=-2, axis2=-1), 1.0, atol=1e-7)  # float32 rounding


def test_masked_softmax_formula():
    """w = (e·M + ε/N) / (Σ e·M + ε), e = exp(a − max over all keys), against a float64 NumPy transcription."""
    logits = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 6, 6)) * 4
    mask = (jax.random.uniform(jax.random.PRNGKey(2), (2, 1, 6, 6)) > 0.5).astype(jnp.float32)
    ours = np.asarray(relation.masked_softmax(logits, mask))
    a = np.asarray(logits, np.float64)
    e = np.exp(a - a.max(-1, keepdims=True)) * np.asarray(mask, np.float64)
    expected = (e + 1e-6 / 6) / (e.sum(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)  # float32 vs float64 rounding
    # Masked keys keep the ε/N leak (not exactly zero), as in the official code.
    leak = ours[np.broadcast_to(np.asarray(mask) == 0, ours.shape)]
    assert leak.size and np.all(leak > 0)


def _composed_policy_softmax(logits, decision, num_template):
    """The masked softmax composed from its parts, differentiated by JAX (the reference for the written backward)."""
    return relation.masked_softmax(logits, relation.attention_mask(relation.token_policy(decision, num_template)))


@pytest.mark.parametrize("case", ["random", "masked_max", "tie"])
def test_policy_softmax_backward_equals_autodiff_of_the_composition(case):
    """relation.policy_softmax: the same forward values, and its written-out backward gives the cotangents of the
    logits and of the (straight-through) decisions that JAX's autodiff of the composition gives, including rows
    whose largest logit is masked (visible mass ≈ 0: the mask gradient grows as 1/(mass + ε)) and ties of the max
    (jnp.max's gradient splits the max's share over them)."""
    nz, ns, heads = 3, 6, 2
    n = nz + ns
    keys = jax.random.split(jax.random.PRNGKey(11), 4)
    logits = jax.random.normal(keys[0], (2, heads, n, n)) * 4
    logp = jax.nn.log_softmax(jax.random.normal(keys[1], (2, ns, 2)))
    noise = jax.random.gumbel(keys[2], logp.shape)
    decision = relation.gumbel_hard(logp, noise)  # 0/1 values, straight-through gradient
    search_only = np.flatnonzero(np.asarray(decision[0, :, 1]) < 0.5)
    if case == "masked_max":  # the search-only token's row: its largest logit on a template key it cannot see
        assert search_only.size, "the draw has a search-only token"
        row = nz + int(search_only[0])
        logits = logits.at[0, :, row, 0].set(60.0)
    if case == "tie":  # two equal largest logits in one row
        logits = logits.at[1, 0, 4, 2].set(30.0).at[1, 0, 4, 7].set(30.0)
    cotangent = jax.random.normal(keys[3], logits.shape)
    np.testing.assert_array_equal(np.asarray(relation.policy_softmax(logits, decision, nz)),
                                  np.asarray(_composed_policy_softmax(logits, decision, nz)))

    def grads(fn):
        return jax.grad(lambda a, lp: jnp.sum(fn(a, relation.gumbel_hard(lp, noise), nz) * cotangent),
                        argnums=(0, 1))(logits, logp)

    def decision_grads(fn):  # the decisions' own cotangent (what division_grad_clip clips)
        return jax.grad(lambda d: jnp.sum(fn(logits, d, nz) * cotangent))(decision)

    ours, reference = grads(relation.policy_softmax), grads(_composed_policy_softmax)
    ours, reference = ours + (decision_grads(relation.policy_softmax),), reference + (
        decision_grads(_composed_policy_softmax),)
    for name, a, b in zip(("logits", "division log-probabilities", "decisions"), ours, reference):
        a, b = np.asarray(a), np.asarray(b)
        scale = np.abs(b).max()
        assert scale > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale, err_msg=name)  # float32 rounding
    if case == "masked_max":
        assert np.abs(np.asarray(reference[1])).max() > 1e3  # the regime where the mask gradient explodes


@pytest.mark.parametrize("case", ["random", "masked_max"])
def test_policy_attention_backward_equals_autodiff_of_the_composition(case):
    """relation.policy_attention (W·V with W the masked softmax, W recomputed in the backward pass): the same
    forward values as the composition, and the cotangents of the logits, the division log-probabilities, the
    decisions and V that JAX's autodiff of the composition gives (with the written softmax backward inside it, and
    with plain autodiff of the softmax's parts)."""
    nz, ns, heads, dim = 3, 6, 2, 4
    n = nz + ns
    keys = jax.random.split(jax.random.PRNGKey(5), 5)
    logits = jax.random.normal(keys[0], (2, heads, n, n)) * 4
    logp = jax.nn.log_softmax(jax.random.normal(keys[1], (2, ns, 2)))
    noise = jax.random.gumbel(keys[2], logp.shape)
    decision = relation.gumbel_hard(logp, noise)
    if case == "masked_max":
        row = nz + int(np.flatnonzero(np.asarray(decision[0, :, 1]) < 0.5)[0])
        logits = logits.at[0, :, row, 0].set(60.0)
    v = jax.random.normal(keys[3], (2, heads, n, dim))
    cotangent = jax.random.normal(keys[4], v.shape)

    def composed(softmax):
        return lambda a, d, v, nz: jnp.einsum("bhqk,bhkd->bhqd", softmax(a, d, nz), v)

    np.testing.assert_array_equal(np.asarray(relation.policy_attention(logits, decision, v, nz)),
                                  np.asarray(composed(relation.policy_softmax)(logits, decision, v, nz)))

    def grads(fn):
        loss = lambda a, lp, d, v: jnp.sum(fn(a, relation.gumbel_hard(lp, noise) + d, v, nz) * cotangent)
        return jax.grad(loss, argnums=(0, 1, 2, 3))(logits, logp, jnp.zeros_like(decision), v)

    ours = grads(relation.policy_attention)
    for reference in (grads(composed(relation.policy_softmax)), grads(composed(_composed_policy_softmax))):
        for name, a, b in zip(("logits", "division log-probabilities", "decisions", "V"), ours, reference):
            a, b = np.asarray(a), np.asarray(b)
            scale = np.abs(b).max()
            assert scale > 0, name
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale, err_msg=name)  # float32 rounding


def test_policy_attention_keeps_no_weights():
    """What the backward pass keeps of one division layer: the logits, the decisions and V, not the (B,H,N,N)
    weights that the composition's W·V keeps besides the logits."""
    from jax._src.ad_checkpoint import saved_residuals
    nz, n = 3, 9
    logits, v = jnp.ones((2, 2, n, n)), jnp.ones((2, 2, n, 4))
    decision = jnp.ones((2, n - nz, 2)) * jnp.array([0.0, 1.0])
    square = (2, 2, n, n)

    def kept(fn):
        return sum(aval.shape == square for aval, _ in saved_residuals(
            lambda a, v: jnp.sum(fn(a * 1.0, decision, v * 1.0, nz)), logits, v))

    composed = lambda a, d, v, nz: jnp.einsum("bhqk,bhkd->bhqd", relation.policy_softmax(a, d, nz), v)
    assert kept(relation.policy_attention) == 1  # the logits
    assert kept(composed) == 2  # the logits and the weights


def test_split_heads_gradient_is_autodiffs_bit_for_bit():
    """The stacked cotangent of split_heads equals autodiff's transpose of the three slices exactly: both only move
    values (and add zeros)."""
    qkv = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 3, 2, 4))
    weights = [jax.random.normal(jax.random.PRNGKey(i), (2, 2, 7, 4)) for i in (1, 2, 3)]

    def loss(split, x):
        return sum(jnp.sum(w * jnp.sin(part)) for w, part in zip(weights, split(x)))

    plain = lambda x: tuple(x.transpose(2, 0, 3, 1, 4))
    for a, b in zip(relation.split_heads(qkv), plain(qkv)):
        np.testing.assert_array_equal(a, b)
    ours = jax.grad(functools.partial(loss, relation.split_heads))(qkv)
    reference = jax.grad(functools.partial(loss, plain))(qkv)
    assert np.abs(np.asarray(reference)).min() > 0  # every entry of qkv receives a cotangent
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("head_dim", [64, 16, 32])
def test_attention_logits_are_the_official_order_bit_for_bit(head_dim):
    """attention_logits = (q·kᵀ)·scale exactly, values and gradients. With scale = d^-½ a power of two (d = 64, 16)
    the program has no multiply over the (B,H,N,N) logits in either pass; with d = 32 it keeps the official order,
    which the folded form would not reproduce."""
    q, k, g = (jax.random.normal(jax.random.PRNGKey(i), shape) * 3.0
               for i, shape in enumerate([(2, 3, 17, head_dim), (2, 3, 17, head_dim), (2, 3, 17, 17)]))
    scale = head_dim ** -0.5
    official = lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k) * scale
    ours = lambda q, k: relation.attention_logits(q, k, scale, {})

    def value_and_cotangents(fn):
        return jax.jit(lambda q, k, g: (fn(q, k), jax.vjp(fn, q, k)[1](g)))(q, k, g)

    for a, b in zip(jax.tree_util.tree_leaves(value_and_cotangents(ours)),
                    jax.tree_util.tree_leaves(value_and_cotangents(official))):
        np.testing.assert_array_equal(a, b)
    jaxpr = jax.make_jaxpr(lambda q, k, g: jax.vjp(ours, q, k)[1](g))(q, k, g)
    square_products = [e for e in jaxpr.eqns if e.primitive.name == "mul" and e.outvars[0].aval.shape == g.shape]
    folded = jnp.einsum("bhqd,bhkd->bhqk", q * scale, k)
    if head_dim == 32:
        assert len(square_products) == 2  # the official order: the scale on the logits and on their cotangent
        assert not np.array_equal(folded, official(q, k))  # why the fold is kept to powers of two
    else:
        assert not square_products


def test_pair_dense_is_the_concatenations_linear_layer():
    """pair_dense(u, t) = Linear([u, broadcast(t)]) in value and in the gradients of u, t, kernel and bias, to float32
    rounding (the 2D-long sum is split in two: here 3.3e-7 of the largest output apart, each form 3.9e-7 from
    float64; tolerance 1e-5 relative),
    and PairDense holds nn.Dense's parameters (names, shapes, initial values)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    u, t = jax.random.normal(keys[0], (2, 9, 768)), jax.random.normal(keys[1], (2, 1, 768))
    kernel, bias = 0.02 * jax.random.normal(keys[2], (1536, 384)), jax.random.normal(keys[3], (384,))
    weights = jax.random.normal(jax.random.PRNGKey(5), (2, 9, 384))

    def concatenated(u, t, kernel, bias):
        return jnp.concatenate([u, jnp.broadcast_to(t, u.shape)], axis=-1) @ kernel + bias

    def loss(fn, *args):
        return jnp.sum(weights * jnp.tanh(fn(*args)))

    args = (u, t, kernel, bias)
    ours, reference = relation.pair_dense(*args), concatenated(*args)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    grads = jax.grad(functools.partial(loss, relation.pair_dense), argnums=(0, 1, 2, 3))(*args)
    expected = jax.grad(functools.partial(loss, concatenated), argnums=(0, 1, 2, 3))(*args)
    for name, a, b in zip(("u", "t", "kernel", "bias"), grads, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)
    with pytest.raises(ValueError, match="pair_dense"):
        relation.pair_dense(u, t, kernel[:1000], bias)

    ours = relation.PairDense(384).init(jax.random.PRNGKey(1), u, t)
    dense = relation.nn.Dense(384, kernel_init=relation.dense_init()).init(
        jax.random.PRNGKey(1), jnp.concatenate([u, jnp.broadcast_to(t, u.shape)], axis=-1))
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(dense)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(dense)):
        np.testing.assert_array_equal(a, b)


def test_select_tokens_threshold_rules():
    # p0 values: 0.3, 0.5, 0.7 → log-probs.
    p0 = np.array([0.3, 0.5 + 1e-3, 0.7])
    logp = jnp.log(jnp.asarray(np.stack([p0, 1 - p0], -1)[None], jnp.float32))
    classes = lambda t: np.asarray(relation.select_tokens(logp, t)).argmax(-1)[0].tolist()
    assert classes(0.0) == [1, 0, 0]  # argmax: interact iff p1 > p0
    assert classes(0.4) == [1, 0, 0]  # interact iff p0 < 0.4
    assert classes(0.6) == [1, 1, 0]  # interact iff p0 < 0.6 (more interacting tokens)
    assert classes(0.2) == [0, 0, 0]


def test_gumbel_hard_is_straight_through():
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(3), (4, 5, 2)))
    noise = jax.random.gumbel(jax.random.PRNGKey(4), logp.shape)
    d = relation.gumbel_hard(logp, noise)
    np.testing.assert_allclose(np.asarray(d), np.asarray(jax.nn.one_hot(jnp.argmax(logp + noise, -1), 2)),
                               atol=1e-7)  # y_hard − y_soft + y_soft: one-hot up to float32 rounding
    grad_hard = jax.grad(lambda lp: jnp.sum(relation.gumbel_hard(lp, noise)[..., 1] * jnp.arange(5.0)))(logp)
    grad_soft = jax.grad(lambda lp: jnp.sum(jax.nn.softmax(lp + noise)[..., 1] * jnp.arange(5.0)))(logp)
    np.testing.assert_allclose(np.asarray(grad_hard), np.asarray(grad_soft), atol=1e-7)


def test_gumbel_temperature_changes_the_gradient_not_the_decisions():
    logp = jax.nn.log_softmax(3.0 * jax.random.normal(jax.random.PRNGKey(5), (4, 5, 2)))
    noise = jax.random.gumbel(jax.random.PRNGKey(6), logp.shape)
    weights = jnp.arange(5.0)
    for tau in (0.5, 4.0):
        np.testing.assert_allclose(np.asarray(relation.gumbel_hard(logp, noise, tau)),
                                   np.asarray(relation.gumbel_hard(logp, noise)), atol=1e-6)  # same one-hot
        grad = jax.grad(lambda lp, t=tau: jnp.sum(relation.gumbel_hard(lp, noise, t)[..., 1] * weights))(logp)
        soft = jax.grad(lambda lp, t=tau: jnp.sum(jax.nn.softmax((lp + noise) / t)[..., 1] * weights))(logp)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(soft), atol=1e-7)  # that of softmax((ℓ + g)/τ)
    # a saturated token (|ℓ1 − ℓ0 + g1 − g0| = 12) keeps a gradient at τ = 4 that τ = 1 has all but lost
    sat, zero = jnp.array([[[-12.0, 0.0]]]), jnp.zeros((1, 1, 2))
    g = [float(jax.grad(lambda lp, t=t: relation.gumbel_hard(lp, zero, t)[0, 0, 1])(sat)[0, 0, 1]) for t in (1., 4.)]
    assert g[0] < 1e-5 and g[1] > 1e-2


def test_gumbel_scale_zero_trains_with_the_trackers_division():
    """s = 0: the training decisions are the tracker's argmax ℓ, the gradient that of softmax(ℓ/τ); s = 1 is the
    official draw; s = 0.5 halves the noise."""
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(7), (4, 6, 2)))
    noise = jax.random.gumbel(jax.random.PRNGKey(8), logp.shape)
    np.testing.assert_allclose(np.asarray(relation.gumbel_hard(logp, noise, scale=0.0)),
                               np.asarray(relation.select_tokens(logp, 0.0)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(relation.gumbel_hard(logp, noise, scale=1.0)),
                                  np.asarray(relation.gumbel_hard(logp, noise)))
    np.testing.assert_allclose(np.asarray(relation.gumbel_hard(logp, noise, scale=0.5)),
                               np.asarray(relation.gumbel_hard(logp, 0.5 * noise)), atol=1e-7)
    grad = jax.grad(lambda lp: jnp.sum(relation.gumbel_hard(lp, noise, 2.0, 0.0)[..., 1] * jnp.arange(6.0)))(logp)
    soft = jax.grad(lambda lp: jnp.sum(jax.nn.softmax(lp / 2.0)[..., 1] * jnp.arange(6.0)))(logp)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(soft), atol=1e-7)


def test_clip_gradient_is_the_identity_forward_and_clips_the_cotangent():
    x = jnp.array([0.0, 1.0, 1.0, 0.0])
    weights = jnp.array([5.0, -0.5, -3.0, 1e-3])
    np.testing.assert_array_equal(np.asarray(relation.clip_gradient(x, 1.0)), np.asarray(x))
    grad = jax.jit(jax.grad(lambda v: jnp.sum(relation.clip_gradient(v, 1.0) * weights)))(x)
    np.testing.assert_array_equal(np.asarray(grad), np.float32([1.0, -0.5, -1.0, 1e-3]))


def test_template_box_mask_matches_official(tiny_outputs):
    """The roi* template mask from the normalised template box reproduces the fixture's ``template_mask``."""
    mask = relation.template_box_mask(jnp.asarray(tiny_outputs["template_box"]), grid=4)
    np.testing.assert_array_equal(np.asarray(mask), tiny_outputs["template_mask"])


def test_template_box_mask_rows_and_columns():
    # Box (x1,y1,w,h) = (1.5, 2.2, 3.0, 1.0) cells on an 8 grid → rows 2..min(int(4.2),8)−1 = 2..3, cols 1..4.
    mask = np.asarray(relation.template_box_mask(jnp.asarray([[1.5, 2.2, 3.0, 1.0]]) / 8, grid=8)).reshape(8, 8)
    expected = np.zeros((8, 8))
    expected[2:4, 1:5] = 1
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("tgt_type", ["allmax", "allavg", "roimax", "roiavg"])
def test_target_representation(tgt_type):
    u_z = jax.random.normal(jax.random.PRNGKey(5), (2, 4, 3))
    m = jnp.asarray([[1, 0, 1, 0], [0, 0, 0, 1]], jnp.float32)
    t = np.asarray(relation.target_representation(u_z, tgt_type, m))
    u, mm = np.asarray(u_z), np.asarray(m)[..., None]
    expected = {"allmax": u.max(1), "allavg": u.mean(1), "roimax": (u * mm).max(1),
                "roiavg": (u * mm).sum(1) / 4}[tgt_type]  # roiavg divides by Nz = 4, not the mask count
    np.testing.assert_allclose(t[:, 0], expected, rtol=1e-6)


def test_roi_target_without_mask_is_an_error():
    with pytest.raises(ValueError, match="roimax"):
        relation.target_representation(jnp.zeros((1, 4, 3)), "roimax")


def test_roi_variants_run_in_the_model(tiny_outputs):
    """The model with tgt_type roiavg uses the template mask (so its outputs differ from allmax)."""
    from grm_jax.models import build_model
    from helpers import load_config

    config = load_config("tiny")
    z, x, mask = tiny_inputs(tiny_outputs)
    outs = {}
    for tgt_type in ("allmax", "roiavg"):
        config.model.tgt_type = tgt_type
        model = build_model(config)
        variables = model.init(jax.random.PRNGKey(0), z, x, mask)
        outs[tgt_type] = np.asarray(model.apply(variables, z, x, mask)["divide_logp"])
    assert not np.allclose(outs["allmax"], outs["roiavg"])
