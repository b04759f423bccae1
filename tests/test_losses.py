"""grm_jax.losses: heat-map target, focal/GIoU/L1 losses and the GRM objective against the official references."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.boxes import cxcywh_to_xyxy, xywh_to_xyxy
from grm_jax.losses import (
    box_token_labels,
    division_box_loss,
    division_entropy_loss,
    division_logit_loss,
    division_ratio_loss,
    focal_loss,
    gaussian_heatmap,
    gaussian_radius,
    giou_loss,
    grm_loss,
    l1_loss,
    pairwise_sum,
)

OFFICIAL = pathlib.Path(__file__).parent / "fixtures" / "official"


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(OFFICIAL / "processing_refs.npz"))


@pytest.fixture(scope="module")
def tiny():
    return dict(np.load(OFFICIAL / "grm_tiny" / "outputs.npz"))


# ---------------------------------------------------------------------------------------------------- radius / map


RADIUS_EXAMPLES = [((1, 1), 0), ((2, 2), 0), ((4, 4), 1), ((8, 8), 2), ((12, 6), 2), ((16, 16), 4)]


@pytest.mark.parametrize("wh, radius", RADIUS_EXAMPLES)
def test_gaussian_radius_spec_examples(wh, radius):
    r = gaussian_radius(*wh)
    assert r.dtype == jnp.float32
    assert int(max(0.0, float(r))) == radius  # exact: the truncated integer radius (docs/training.md#heat-map-target)


def test_gaussian_radius_raw_value():
    # 1e-3 abs: docs/training.md#heat-map-target quotes the official r(4, 4) = 1.093 to three decimals.
    np.testing.assert_allclose(float(gaussian_radius(4.0, 4.0)), 1.093, atol=1e-3)


@pytest.mark.parametrize("size", [16, 20])
def test_gaussian_heatmap_matches_official(refs, size):
    maps = gaussian_heatmap(refs[f"heatmap_{size}_boxes"], size)
    assert maps.shape == (16, size, size) and maps.dtype == jnp.float32
    # 1e-6 abs: the official kernel is exp in float64 cast to float32; ours is a float32 exp of the exactly
    # formed float32 exponent (≤ 1 ulp apart, values ≤ 1).
    np.testing.assert_allclose(maps, refs[f"heatmap_{size}_maps"], rtol=0, atol=1e-6)


def test_gaussian_heatmap_jit_equals_eager(refs):
    boxes = refs["heatmap_16_boxes"]
    eager = gaussian_heatmap(boxes, 16)
    jitted = jax.jit(gaussian_heatmap, static_argnums=1)(jnp.asarray(boxes), 16)
    np.testing.assert_array_equal(jitted, eager)  # exact: the same float32 program


def test_gaussian_heatmap_footprint_and_half_to_even_centre():
    size = 16
    # Centres at 2.5 and 5.5 cells (round half to even → 2 and 6), 8×8-cell boxes → r = 2.
    boxes = np.array([[2.5 - 4, 5.5 - 4, 8, 8]], np.float32) / size
    (m,) = np.asarray(gaussian_heatmap(boxes, size))
    assert m[6, 2] == 1.0 and np.sum(m == 1.0) == 1  # exact: exp(0) at the rounded centre only
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 8, 0, 4)  # the 5×5 (2r+1) footprint
    # 1e-7 abs: float32 exp of exp(−(dx² + dy²)/(2σ²)), σ = 5/6.
    np.testing.assert_allclose(m[4, 0], np.exp(-(4 + 4) / (2 * (5 / 6) ** 2)), atol=1e-7)


def test_gaussian_heatmap_centre_off_map_draws_overlap_like_official():
    size, sigma = 16, 5 / 6  # 8×8-cell boxes → r = 2
    # Centre cell x = 16 (one past the border): the official slicing still writes columns 14, 15 (dx = −2, −1).
    # Centre cell x = 19: the kernel misses the map, nothing is drawn.
    boxes = np.array([[16 - 4, 8 - 4, 8, 8], [19 - 4, 8 - 4, 8, 8]], np.float32) / size
    near, far = np.asarray(gaussian_heatmap(boxes, size))
    dy, dx = np.mgrid[-2:3, -2:0]
    expected = np.zeros((size, size))
    expected[6:11, 14:16] = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    np.testing.assert_allclose(near, expected, rtol=0, atol=1e-7)  # 1e-7 abs: float32 exp
    assert not far.any()  # exact zeros


# ---------------------------------------------------------------------------------------------------------- focal


def test_pairwise_sum_is_accurate():
    x = np.random.default_rng(0).uniform(0, 1, 3000).astype(np.float32)
    # 2e-7 relative: pairwise float32 summation error is O(log2(n)·eps) ≈ 12·6e-8 worst case, typically far less.
    np.testing.assert_allclose(float(pairwise_sum(x)), x.astype(np.float64).sum(), rtol=2e-7)


def test_focal_loss_matches_official(refs):
    loss = focal_loss(refs["focal_score"], refs["focal_target"])
    # 1e-6 relative: float32 element-wise terms (log may differ by an ulp) summed pairwise, like PyTorch's
    # cascade sum; a plain XLA jnp.sum drifts by ~1.3e-6 here.
    np.testing.assert_allclose(float(loss), refs["focal_loss"], rtol=1e-6)
    jitted = jax.jit(focal_loss)(refs["focal_score"], refs["focal_target"])
    np.testing.assert_allclose(float(jitted), refs["focal_loss"], rtol=1e-6)  # same reason


def test_focal_loss_without_positives():
    rng = np.random.default_rng(1)
    score = rng.uniform(0.01, 0.99, (2, 8, 8, 1)).astype(np.float32)
    target = rng.uniform(0.0, 0.9, (2, 8, 8, 1)).astype(np.float32)  # no cell equals 1 → num_pos == 0
    s, t = score.astype(np.float64), target.astype(np.float64)
    expected = -np.sum(np.log(1 - s) * s**2 * (1 - t) ** 4)  # −L_neg, no division
    # 1e-6 relative: float32 evaluation of the float64 formula.
    np.testing.assert_allclose(float(focal_loss(score, target)), expected, rtol=1e-6)
    grad = jax.jit(jax.grad(focal_loss))(jnp.asarray(score), jnp.asarray(target))
    assert np.all(np.isfinite(grad))  # the untaken num_pos > 0 branch must not poison the gradient


# ------------------------------------------------------------------------------------------------------ GIoU / L1


def test_giou_and_l1_match_official(refs):
    pred = cxcywh_to_xyxy(refs["giou_pred_cxcywh"])
    gt = jnp.clip(xywh_to_xyxy(refs["giou_gt_xywh"]), 0.0, 1.0)  # clamped as in training
    loss, iou = giou_loss(pred, gt)
    # 1e-6 abs: same float32 operations in the same order, means over 8 boxes / 32 coordinates.
    np.testing.assert_allclose(float(loss), refs["giou_loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(iou, refs["giou_iou"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(float(l1_loss(pred, gt)), refs["l1_loss"], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------------- grm_loss


def test_grm_loss_matches_official_train_pass(tiny):
    score_nhwc = tiny["train_score_map"].transpose(0, 2, 3, 1)
    total, status = grm_loss(tiny["train_pred_boxes"], score_nhwc, tiny["search_box"], search_size=128)
    # 1e-6 relative: the official actor's float32 losses on the same model outputs (feature map 8×8).
    np.testing.assert_allclose(float(total), tiny["train_loss_total"], rtol=1e-6)
    for key in ("total", "giou", "l1", "loc"):
        np.testing.assert_allclose(float(status[f"Ls/{key}"]), tiny[f"train_status_Ls_{key}"], rtol=1e-6)
    np.testing.assert_allclose(float(status["IoU"]), tiny["train_status_IoU"], rtol=1e-6)  # same reason


def _random_batch(seed, batch=4, size=16):
    rng = np.random.default_rng(seed)
    pred = np.concatenate([rng.uniform(0.2, 0.8, (batch, 2)), rng.uniform(0.05, 0.6, (batch, 2))], -1)
    gt = np.concatenate([rng.uniform(-0.1, 0.6, (batch, 2)), rng.uniform(0.1, 0.6, (batch, 2))], -1)
    score = rng.uniform(1e-4, 1 - 1e-4, (batch, size, size, 1))
    return pred.astype(np.float32)[:, None, :], score.astype(np.float32), gt.astype(np.float32)


def test_grm_loss_total_is_weighted_sum():
    pred, score, gt = _random_batch(2)
    total, status = jax.jit(grm_loss, static_argnums=3)(pred, score, gt, 256)
    giou, l1, focal = (np.float32(status[k]) for k in ("Ls/giou", "Ls/l1", "Ls/loc"))
    # Exact: the total is formed as 2·giou + 5·l1 + 1·focal in float32, in that order.
    assert np.float32(total) == np.float32(np.float32(2.0) * giou + np.float32(5.0) * l1) + focal
    assert float(status["Ls/total"]) == float(total)  # exact: the same value
    # Each term equals its stand-alone function on the clamped GT (1e-6 relative: XLA may fuse differently).
    gt_xyxy = np.clip(np.asarray(xywh_to_xyxy(gt)), 0, 1)
    pred_xyxy = np.asarray(cxcywh_to_xyxy(pred[:, 0]))
    np.testing.assert_allclose(giou, float(giou_loss(pred_xyxy, gt_xyxy)[0]), rtol=1e-6)
    np.testing.assert_allclose(l1, float(l1_loss(pred_xyxy, gt_xyxy)), rtol=1e-6)
    heat = gaussian_heatmap(gt, 16)[..., None]  # the heat map uses the unclamped GT
    np.testing.assert_allclose(focal, float(focal_loss(score, heat)), rtol=1e-6)


def test_grm_loss_weights_query_axis_and_gradients():
    pred, score, gt = _random_batch(3)
    total, _ = grm_loss(pred, score, gt, 256, giou_weight=1.0, l1_weight=0.0, focal_weight=0.0)
    _, status = grm_loss(pred[:, 0], score, gt, 256)  # (B, 4) is accepted like (B, 1, 4)
    np.testing.assert_allclose(float(total), float(status["Ls/giou"]), rtol=1e-7)  # 1e-7: one rounding at most
    grads = jax.grad(lambda p, s: grm_loss(p, s, gt, 256)[0], argnums=(0, 1))(jnp.asarray(pred), jnp.asarray(score))
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in grads)
    # status is stop-gradient'ed: differentiating through it gives zeros.
    zero = jax.grad(lambda p: grm_loss(p, score, gt, 256)[1]["Ls/total"])(jnp.asarray(pred))
    assert not np.any(zero)


def test_division_entropy_loss_is_one_minus_the_binary_entropy():
    """The official actor's optional term: 1 + r·log2(r + 1e-5) + (1 − r)·log2(1 − r + 1e-5), averaged."""
    assert abs(float(division_entropy_loss(jnp.array([[0.5, 0.5]])))) < 1e-4  # ε shifts it by ~3e-5
    np.testing.assert_allclose(float(division_entropy_loss(jnp.array([[0.0, 1.0]]))), 1.0, atol=2e-5)
    r = np.array([[0.1, 0.7], [0.25, 0.99]])
    expected = np.mean(1 + r * np.log2(r + 1e-5) + (1 - r) * np.log2(1 - r + 1e-5))
    np.testing.assert_allclose(float(division_entropy_loss(jnp.asarray(r))), expected, rtol=1e-6)  # float32
    grad = jax.grad(lambda x: division_entropy_loss(x))(jnp.array([[0.2, 0.8]]))
    assert grad[0, 0] < 0 < grad[0, 1]  # descent moves every ratio towards 0.5


def test_division_ratio_loss_pulls_the_expected_ratio_of_each_layer_and_sample():
    p1 = np.array([[[0.1, 0.3], [0.9, 0.9]], [[0.5, 0.5], [0.2, 0.0]]])  # (layers, batch, tokens)
    logp = jnp.log(jnp.stack([1 - p1, p1], axis=-1).clip(1e-30))
    expected = np.mean((p1.mean(axis=-1) - 0.25) ** 2)
    np.testing.assert_allclose(float(division_ratio_loss(logp, 0.25)), expected, rtol=1e-5)  # float32 log/exp
    # the noise-free probabilities decide, not a sampled ratio: a layer whose tokens all sit at p1 = 0.25 meets it
    assert float(division_ratio_loss(jnp.log(jnp.full((1, 2, 4, 2), 0.5).at[..., 1].set(0.25)
                                             .at[..., 0].set(0.75)), 0.25)) < 1e-12
    grad = jax.grad(lambda lp: division_ratio_loss(lp, 0.25))(logp)
    assert float(grad[0, 1, 0, 1]) > 0 and float(grad[0, 0, 0, 1]) < 0  # ratio too high: ℓ1 pushed down, low: up


def test_division_logit_loss_is_the_mean_squared_gap():
    logp = jnp.array([[[[-1.0, -2.0], [-5.0, -0.5]]]])  # gaps −1, +4.5
    np.testing.assert_allclose(float(division_logit_loss(logp)), (1.0 + 4.5 ** 2) / 2, rtol=1e-6)
    grad = jax.grad(division_logit_loss)(logp)
    np.testing.assert_allclose(np.asarray(grad[0, 0, :, 1]), [-1.0, 4.5], rtol=1e-6)  # d/dℓ1 = (ℓ1 − ℓ0) / n · 2


def test_box_token_labels_mark_the_tokens_whose_centre_lies_in_the_box():
    # 8×8 grid, box (0.375, 0.375, 0.25, 0.25): token centres 3.5/8 and 4.5/8 in both axes fall inside
    labels = np.asarray(box_token_labels(jnp.array([[0.375, 0.375, 0.25, 0.25]]), 8)).reshape(8, 8)
    expected = np.zeros((8, 8))
    expected[3:5, 3:5] = 1
    np.testing.assert_array_equal(labels, expected)
    # grown by one token on every side: rows and columns 2..5
    grown = np.asarray(box_token_labels(jnp.array([[0.375, 0.375, 0.25, 0.25]]), 8, 1.0)).reshape(8, 8)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(grown, expected)
    # a box partly outside the crop, and a thin one in the first column: x ≤ centre ≤ x + w in both axes
    edge = np.asarray(box_token_labels(jnp.array([[-0.2, 0.0, 0.3, 0.1]]), 8)).reshape(8, 8)
    assert edge.sum() == 1 and edge[0, 0] == 1


def test_division_box_loss_is_the_class_balanced_nll_of_the_box_labels():
    # one layer, one sample, 2×2 grid; the box holds token 0 only
    p1 = np.array([0.9, 0.2, 0.4, 0.5])
    logp = jnp.log(jnp.asarray(np.stack([1 - p1, p1], axis=-1)[None, None]))
    box = jnp.array([[0.0, 0.0, 0.5, 0.5]])
    expected = 0.5 * (-np.log(0.9) + np.mean(-np.log(1 - p1[1:])))
    np.testing.assert_allclose(float(division_box_loss(logp, box, 2)), expected, rtol=1e-6)  # float32 log
    grad = np.asarray(jax.grad(lambda lp: division_box_loss(lp, box, 2))(logp))[0, 0]
    assert grad[0, 1] < 0 and (grad[1:, 0] < 0).all()  # descent raises ℓ1 in the box and ℓ0 outside it
    # a sample with no token in its box counts only the outside class (no division by zero)
    empty = jnp.array([[0.9, 0.9, 0.01, 0.01]])
    np.testing.assert_allclose(float(division_box_loss(logp, empty, 2)), 0.5 * np.mean(-np.log(1 - p1)), rtol=1e-6)
