"""The two attention implementations and mixed precision (``config.model.attention``, ``config.model.dtype``).

``masked`` is the parity reference (``test_grm.py``); here: ``fused`` (hard boolean mask through
``jax.nn.dot_product_attention``, inference only) and ``dtype='bfloat16'`` against it, on the official fixture
model. The tolerances are the deviations measured on this model (and, for ViT-B/256 random init, by
``benchmarks/forward.py --accuracy``, see ``benchmarks/README.md``) with a margin, written beside each assertion.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from grm_jax import losses
from grm_jax.convert.state_dict import state_dict_to_variables
from grm_jax.flops import iter_eqns
from grm_jax.models import build_model, layers, relation, to_official_layout
from helpers import load_config, tiny_inputs

MAP_KEYS = ("pred_boxes", "score_map", "size_map", "offset_map", "backbone_out", "divide_logp")


def _model(tiny_outputs, tiny_state_dict, **model_overrides):
    config = load_config("tiny")
    config.model.drop_path_rate = 0.0
    for key, value in model_overrides.items():
        setattr(config.model, key, value)
    model = build_model(config)
    z, x, _ = tiny_inputs(tiny_outputs)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    return model, state_dict_to_variables(tiny_state_dict, shapes)


@pytest.fixture(scope="module")
def fused(tiny_outputs, tiny_state_dict):
    return _model(tiny_outputs, tiny_state_dict, attention="fused")


@pytest.fixture(scope="module")
def bf16(tiny_outputs, tiny_state_dict):
    return _model(tiny_outputs, tiny_state_dict, dtype="bfloat16")


def _eval(model, variables, outputs, threshold):
    z, x, mask = tiny_inputs(outputs)
    return jax.jit(lambda v: model.apply(v, z, x, mask, threshold=threshold))(variables)


def _train_pass(model, variables, outputs):
    """Loss and gradients of the fixture's train pass (the reference Gumbel noise, DropPath off)."""
    z, x, mask = tiny_inputs(outputs)
    noise = jnp.asarray(outputs["train_gumbel_noise"])

    @jax.jit
    def run(params):
        def loss_fn(params):
            out, _ = model.apply({**variables, "params": params}, z, x, mask, train=True, gumbel_noise=noise,
                                 mutable=["batch_stats"])
            total, _ = losses.grm_loss(out["pred_boxes"], out["score_map"], jnp.asarray(outputs["search_box"]),
                                       search_size=model.config.search_size)
            return total, out

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    return run(variables["params"])


def _divide_grads(grads):
    flat = traverse_util.flatten_dict(grads)
    return [leaf for path, leaf in flat.items() if path[-2].startswith("divide_predict")]


# ---------------------------------------------------------------------------------------------------- masks


def test_visibility_mask_is_the_hard_attention_mask():
    """For exact one-hot decisions the boolean mask is exactly where the reference float mask is 1."""
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, size=(4, 12))
    classes[0] = 0  # no interacting token: two-stream
    classes[1] = 1  # all interacting: one-stream
    decision = jax.nn.one_hot(jnp.asarray(classes), 2)
    reference = np.asarray(relation.attention_mask(relation.token_policy(decision, 5)))
    visible = np.asarray(relation.visibility_mask(decision, 5))
    assert visible.dtype == bool and visible.shape == reference.shape == (4, 1, 17, 17)
    assert set(np.unique(reference)) <= {0.0, 1.0}
    np.testing.assert_array_equal(visible, reference == 1.0)


def test_fused_attention_gives_masked_keys_exactly_zero_weight():
    """Template queries never see search-only keys: huge values there leave their rows bit-identical with the
    fused path, while the reference's ε/N leak lets them through."""
    rng = np.random.default_rng(1)
    batch, nz, ns, heads, dim = 2, 4, 12, 3, 8
    n = nz + ns
    q, k, v = (jnp.asarray(rng.normal(size=(batch, n, heads, dim)), jnp.float32) for _ in range(3))
    classes = rng.integers(0, 2, size=(batch, ns))
    decision = jax.nn.one_hot(jnp.asarray(classes), 2)
    visible = relation.visibility_mask(decision, nz)
    search_only = np.concatenate([np.zeros((batch, nz), bool), classes == 0], axis=1)
    v_poisoned = jnp.where(jnp.asarray(search_only)[:, :, None, None], 1e6, v)

    out = relation.fused_attention(q, k, v, visible)
    out_poisoned = relation.fused_attention(q, k, v_poisoned, visible)
    np.testing.assert_array_equal(np.asarray(out)[:, :nz], np.asarray(out_poisoned)[:, :nz])

    def reference(v):
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * dim ** -0.5
        mask = relation.attention_mask(relation.token_policy(decision, nz))
        return jnp.einsum("bhqk,bkhd->bqhd", relation.masked_softmax(logits, mask), v)

    leak = np.abs(np.asarray(reference(v_poisoned) - reference(v))[:, :nz]).max()
    assert leak > 1e-4  # ε/N/(Σ+ε) ≈ 3e-9 per masked key, times 1e6
    # Otherwise the two agree to float32 rounding plus the ε leak on |v| ≲ 3 (measured ≤ 2.2e-6).
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference(v)), rtol=0, atol=5e-6)


# ---------------------------------------------------------------------------------------------------- fused


@pytest.mark.parametrize("tag,threshold", [("t0", 0.0), ("t0p4", 0.4)])
def test_fused_matches_the_reference(tiny_model_and_variables, fused, tiny_outputs, tag, threshold):
    model, variables = tiny_model_and_variables
    reference = _eval(model, variables, tiny_outputs, threshold)
    out = _eval(*fused, tiny_outputs, threshold)
    # Decisions: identical (the log-prob margins, ≥ 4e-3, dwarf the ≤ 1e-6 deviations).
    np.testing.assert_array_equal(np.asarray(out["decisions"]), np.asarray(reference["decisions"]))
    for key in MAP_KEYS:
        # Measured on this model: ≤ 1.2e-7 (boxes), 2.4e-7 (score map), 9.5e-7 (offset map, backbone_out)
        # — the ε leak and softmax rounding; 5e-6 leaves a 5x margin and stays inside the parity 1e-5.
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(reference[key]), rtol=0, atol=5e-6,
                                   err_msg=key)
    official = to_official_layout(out)
    for key in MAP_KEYS:
        # Still equal to the official PyTorch numbers at the parity tolerance (1e-5 abs, test_grm.py).
        np.testing.assert_allclose(np.asarray(official[key]), tiny_outputs[f"eval_{tag}_{key}"], rtol=0,
                                   atol=1e-5, err_msg=key)


def test_fused_training_takes_the_reference_path(tiny_model_and_variables, fused, tiny_outputs):
    """attention='fused' trains exactly as 'masked' does, so the division MLP keeps its gradient (which flows only
    through the float mask, test_grm.py::test_division_mlp_learns_only_through_the_mask)."""
    model, variables = tiny_model_and_variables
    (loss_ref, _), grads_ref = _train_pass(model, variables, tiny_outputs)
    (loss, _), grads = _train_pass(*fused, tiny_outputs)
    assert float(loss) == float(loss_ref)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(float(jnp.sum(g * g)) > 0 for g in _divide_grads(grads))


def test_unknown_attention_is_an_error(tiny_outputs):
    config = load_config("tiny")
    config.model.attention = "flash"
    with pytest.raises(ValueError, match="model.attention"):
        build_model(config)


# ---------------------------------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("threshold", [0.0, 0.4])
def test_bfloat16_forward_deviation(tiny_model_and_variables, bf16, tiny_outputs, threshold):
    model, variables = tiny_model_and_variables
    reference = _eval(model, variables, tiny_outputs, threshold)
    out = _eval(*bf16, tiny_outputs, threshold)
    for key in MAP_KEYS:
        assert out[key].dtype == jnp.float32, key  # outputs stay float32
    # Measured on this model (bf16 operands, float32 accumulation, 8-bit mantissa):
    #   pred_boxes ≤ 1.1e-3, score_map ≤ 3.8e-3, size_map ≤ 2.6e-3, offset_map ≤ 1.4e-2, divide_logp ≤ 1.0e-2,
    #   backbone_out ≤ 2.7e-2 abs; tolerances ≈ 3x that.
    tolerances = dict(pred_boxes=4e-3, score_map=1e-2, size_map=1e-2, offset_map=5e-2, divide_logp=3e-2,
                      backbone_out=8e-2)
    for key, atol in tolerances.items():
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(reference[key]), rtol=0, atol=atol,
                                   err_msg=key)
    # Token decisions near the decision boundary may flip: measured 1 (τ=0) and 2 (τ=0.4) of 3·128; allow 2 %.
    flipped = np.mean(np.argmax(out["decisions"], -1) != np.argmax(reference["decisions"], -1))
    assert flipped <= 0.02, flipped


@pytest.mark.parametrize("image,kernel,strides,padding", [
    ((2, 16, 16, 24), (3, 3, 24, 8), (1, 1), [(1, 1), (1, 1)]),  # the head's 3x3 convs
    ((2, 64, 64, 3), (16, 16, 3, 8), (16, 16), "VALID"),  # the patch embedding
    ((1, 8, 8, 5), (1, 1, 5, 2), (1, 1), [(0, 0), (0, 0)]),  # conv5 1x1
    ((1, 9, 9, 4), (3, 3, 4, 6), (2, 2), [(1, 1), (1, 1)]),  # strided, overlapping
])
def test_conv_as_matmul_is_the_convolution(image, kernel, strides, padding):
    """The bfloat16 models' convolutions run as im2col matmuls: the same sums, in another order."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=image), jnp.float32)
    w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    ref = jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn, precision="highest")
    out = layers.conv_as_matmul(x, w, strides, padding, dimension_numbers=dn, precision="highest")
    # float32 sums of up to 768 unit-variance products (|values| ≲ 100): measured ≤ 3.3e-5 abs.
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-4)


def test_inference_variables_cast_kernels_once_with_identical_outputs(bf16, tiny_outputs):
    from grm_jax.models.grm import inference_variables

    model, variables = bf16
    cast = inference_variables(variables, "bfloat16")
    kernels = [leaf for path, leaf in traverse_util.flatten_dict(cast).items() if path[-1] == "kernel"]
    others = [leaf for path, leaf in traverse_util.flatten_dict(cast).items() if path[-1] != "kernel"]
    assert kernels and all(leaf.dtype == jnp.bfloat16 for leaf in kernels)
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in others)
    assert inference_variables(variables, "float32") is variables
    a, b = _eval(model, variables, tiny_outputs, 0.0), _eval(model, cast, tiny_outputs, 0.0)
    for key in MAP_KEYS:  # the model casts every kernel to bfloat16 anyway: bit-identical
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


def test_bfloat16_matmuls_accumulate_in_float32_and_the_rest_stays_float32(bf16, tiny_outputs):
    """Forward (the masked path, train mode): every matmul/conv takes bfloat16 operands and returns float32;
    softmax (exp), LayerNorm and BatchNorm statistics (reductions, rsqrt), GELU (erf) and the loss are float32.
    Backward: every matmul/conv returns float32, the gradients are float32. (The cotangents of bfloat16
    activations are bfloat16, as usual in mixed precision.)"""
    model, variables = bf16
    z, x, mask = tiny_inputs(tiny_outputs)
    noise = jnp.asarray(tiny_outputs["train_gumbel_noise"])

    def loss_fn(params):
        out, _ = model.apply({**variables, "params": params}, z, x, mask, train=True, gumbel_noise=noise,
                             mutable=["batch_stats"])
        return losses.grm_loss(out["pred_boxes"], out["score_map"], jnp.asarray(tiny_outputs["search_box"]),
                               search_size=model.config.search_size)[0]

    closed = jax.make_jaxpr(jax.value_and_grad(loss_fn))(variables["params"])
    assert all(aval.dtype == jnp.float32 for aval in closed.out_avals)  # loss and gradients
    products = [eqn for eqn in iter_eqns(closed.jaxpr) if eqn.primitive.name in ("dot_general", "conv_general_dilated")]
    assert len(products) > 100 and all(eqn.outvars[0].aval.dtype == jnp.float32 for eqn in products)

    matmuls = statistics = 0
    for eqn in iter_eqns(jax.make_jaxpr(loss_fn)(variables["params"]).jaxpr):  # the forward pass
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            matmuls += 1
            assert [var.aval.dtype for var in eqn.invars] == [jnp.bfloat16] * 2, eqn
            assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
        # (reduce_max is exact in any precision: the template summary's max runs on bfloat16 LN outputs.)
        elif name in ("exp", "log", "logistic", "reduce_sum", "rsqrt", "erf", "div"):
            statistics += 1
            assert all(var.aval.dtype != jnp.bfloat16 for var in eqn.invars), eqn
    assert matmuls > 40 and statistics > 30


def test_bfloat16_train_step_runs(tiny_outputs):
    """One step of grm_jax/train/step.py with dtype='bfloat16': finite, float32 parameters and optimiser state,
    gradients into the division MLP, loss next to the float32 one."""
    from grm_jax.models import sample_keys
    from grm_jax.train.optimizer import make_optimizer
    from grm_jax.train.step import create_state, make_train_step

    z, x, mask = tiny_inputs(tiny_outputs)
    batch = dict(template=z, search=x, template_mask=mask, search_anno=jnp.asarray(tiny_outputs["search_box"]))
    config = load_config("tiny")
    config.model.dtype = "bfloat16"
    config.model.drop_path_rate = 0.0  # at 0.1 this batch of 2 drops both samples' last attention: no gradient
    model = build_model(config)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), z, x)
    optimizer = make_optimizer(config, variables["params"], 10)
    state = create_state(variables["params"], variables["batch_stats"], optimizer)
    step = jax.jit(make_train_step(model, optimizer, config, 10, axis_name=None))
    new_state, metrics = step(state, batch, jax.random.PRNGKey(0))
    for leaf in jax.tree_util.tree_leaves((new_state.params, new_state.opt_state, new_state.batch_stats)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
        assert bool(jnp.all(jnp.isfinite(leaf)))
    assert all(bool(jnp.all(jnp.isfinite(value))) for value in jax.tree_util.tree_leaves(metrics))
    moved = [jnp.max(jnp.abs(a - b)) for a, b in zip(_divide_grads(new_state.params), _divide_grads(state.params))]
    assert min(float(m) for m in moved) > 0  # every division-MLP tensor was updated

    # The float32 model's focal loss on the same batch, weights, Gumbel noise and DropPath masks as the step's.
    # The focal term is compared because it is continuous in the score map: the box terms read the box at the
    # score map's argmax, and in this untrained model two cells of sample 0 are within bfloat16 rounding of each
    # other (cell 41 vs 19), so GIoU/L1 jump between them (total 27.83 vs 27.28).
    config.model.dtype = "float32"
    model32 = build_model(config)
    keys = sample_keys(jax.random.PRNGKey(0), 0, jnp.arange(z.shape[0]))

    @jax.jit
    def focal32(variables):
        out, _ = model32.apply(variables, z, x, mask, train=True, sample_keys=keys, mutable=["batch_stats"])
        return losses.grm_loss(out["pred_boxes"], out["score_map"], batch["search_anno"],
                               search_size=model.config.search_size)[1]["Ls/loc"]

    # Measured: 22.7452 (bfloat16) vs 22.7736 (float32), 1.2e-3 relative; 5e-3 allowed.
    np.testing.assert_allclose(float(metrics["Ls/loc"]), float(focal32(variables)), rtol=5e-3)


def test_masked_attention_stores_no_mask_and_no_extra_per_head_array(tiny_model_and_variables, tiny_outputs):
    """The compiled eval forward (tiny GRM, batch 2): the three-category mask is computed inside the attention
    fusions, never stored as an array of its own — every top-level (B,1,N,N) value is a constant — and a division
    block writes no more per-head (B,H,N,N) arrays than the plain first block (2 each: the exponentials and the
    normalised weights). Guards the masked path's cost against a change that would make XLA materialise the
    mask per head."""
    import re

    model, variables = tiny_model_and_variables
    z, x, mask = tiny_inputs(tiny_outputs)
    n = z.shape[1] * z.shape[2] // 256 + x.shape[1] * x.shape[2] // 256
    b, h = z.shape[0], model.config.num_heads
    text = jax.jit(lambda v, t: model.apply(v, z, x, mask, threshold=t)).lower(variables, jnp.float32(0)) \
        .compile().as_text()
    shapes = collections.Counter()
    for line in text[text.index("ENTRY"):].splitlines():
        found = re.match(r"\s*(?:ROOT )?%\S+ = f32\[([\d,]+)\]\{[^}]*\} ([\w-]+)\((.*?)\)", line)
        if not found or not found.group(1).endswith(f",{n},{n}"):
            continue
        shape = tuple(int(d) for d in found.group(1).split(","))
        operands = [o.strip() for o in found.group(3).split(",") if o.strip().startswith("%")]
        if shape == (b, 1, n, n):
            assert all(o.startswith("%constant") for o in operands), line[:200]
        shapes[shape] += 1
    per_head = shapes[(b, h, n, n)] + shapes[(b * h, n, n)]
    assert shapes[(b, h, n, n)] > 0
    # 2 per block, + at most one constant broadcast the blocks share.
    assert per_head <= 2 * model.config.depth + 1, shapes
