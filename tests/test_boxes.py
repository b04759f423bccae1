"""grm_jax.boxes: conversions, IoU/GIoU and the tracker's clip_box against hand values and the official references."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.boxes import (
    box_area,
    box_iou,
    clip_box,
    cxcywh_to_xyxy,
    generalized_box_iou,
    xywh_to_xyxy,
    xyxy_to_xywh,
)

REFS = pathlib.Path(__file__).parent / "fixtures" / "official" / "processing_refs.npz"


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(REFS))


def test_conversions_hand_values_and_leading_dims():
    cxcywh = jnp.array([[[0.5, 0.25, 0.5, 0.25], [2.0, 3.0, 4.0, 2.0]]])  # (1, 2, 4): batched leading dims
    xyxy = cxcywh_to_xyxy(cxcywh)
    # Exact: every value is a small dyadic rational, representable in float32.
    np.testing.assert_array_equal(xyxy, [[[0.25, 0.125, 0.75, 0.375], [0.0, 2.0, 4.0, 4.0]]])
    xywh = xyxy_to_xywh(xyxy)
    np.testing.assert_array_equal(xywh, [[[0.25, 0.125, 0.5, 0.25], [0.0, 2.0, 4.0, 2.0]]])
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), xyxy)  # exact: dyadic values again
    np.testing.assert_array_equal(box_area(xyxy), [[0.125, 8.0]])  # exact


def test_iou_and_giou_hand_values():
    b1 = jnp.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b2 = jnp.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    iou, union = box_iou(b1, b2)
    giou, iou2 = generalized_box_iou(b1, b2)
    # Pair 0: inter 1, union 7, enclosure 3×3 = 9. Pair 1: disjoint, union 2, enclosure 3×1 = 3.
    # Tolerance 1e-7: float32 rounding of 1/7 and of the GIoU subtraction.
    np.testing.assert_allclose(union, [7.0, 2.0], rtol=0, atol=0)  # sums of small integers are exact
    np.testing.assert_allclose(iou, [1 / 7, 0.0], atol=1e-7)
    np.testing.assert_array_equal(iou2, iou)  # the same computation
    np.testing.assert_allclose(giou, [1 / 7 - 2 / 9, 0.0 - 1 / 3], atol=1e-7)


def test_giou_iou_matches_official(refs):
    pred = cxcywh_to_xyxy(refs["giou_pred_cxcywh"])
    gt = jnp.clip(xywh_to_xyxy(refs["giou_gt_xywh"]), 0.0, 1.0)
    _, iou = generalized_box_iou(pred, gt)
    # 1e-6 abs: same float32 operations in the same order; allows an ulp of reassociation by XLA.
    np.testing.assert_allclose(iou, refs["giou_iou"], rtol=0, atol=1e-6)


def test_clip_box_matches_official_exactly(refs):
    cases = refs["clip_cases"]
    out = clip_box(cases[:, :4], cases[:, 4], cases[:, 5])
    assert out.dtype == np.float64 and isinstance(out, np.ndarray)
    # Exact: float64 min/max/add/sub, the same operations as the official code's Python floats.
    np.testing.assert_array_equal(out, cases[:, 6:])
    # Row by row with scalar H, W as the tracker calls it.
    for row in cases:
        np.testing.assert_array_equal(clip_box(row[:4], row[4], row[5]), row[6:])  # exact, as above


def test_clip_box_spec_example():
    # The measured official example of docs/tracking.md#clipping; exact (integers in float64).
    np.testing.assert_array_equal(clip_box([-20.0, 470.0, 50.0, 30.0], 480, 640), [0.0, 470.0, 30.0, 10.0])


def test_clip_box_jax_path_equals_numpy_path_under_jit(refs):
    cases = refs["clip_cases"].astype(np.float32)
    host = clip_box(cases[:, :4], cases[:, 4], cases[:, 5])  # NumPy in float32
    dev = jax.jit(clip_box)(jnp.asarray(cases[:, :4]), jnp.asarray(cases[:, 4]), jnp.asarray(cases[:, 5]))
    assert isinstance(dev, jax.Array) and dev.dtype == jnp.float32
    # Exact: identical IEEE float32 min/max/add/sub on both paths.
    np.testing.assert_array_equal(np.asarray(dev), host)
