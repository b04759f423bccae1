"""Benchmark metrics against the official analysis code (``processing_refs.npz`` ``metric_*``)."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.evaluate import metrics

KEYS = ("iou", "center_err", "center_err_norm", "valid", "success_curve", "precision_curve", "norm_precision_curve")


@pytest.mark.parametrize("case", range(8))
def test_sequence_metrics_match_official(processing_refs, case):
    p = f"metric_{case:02d}_"
    visible = processing_refs.get(p + "visible")
    ours = metrics.sequence_metrics(processing_refs[p + "pred"], processing_refs[p + "anno"],
                                    str(processing_refs[p + "kind"]), visible)
    for key in KEYS:
        ref = processing_refs[p + key]
        # Same float64 formulas: ≤ 1e-9; ±inf and −1 markers for invalid frames compared exactly.
        np.testing.assert_allclose(ours[key], ref, rtol=0, atol=1e-9, err_msg=f"{case} {key}")


def test_the_cases_cover_every_rule(processing_refs):
    kinds = {str(processing_refs[f"metric_{i:02d}_kind"]) for i in range(8)}
    assert kinds == {"otb", "lasot", "uav", "nfs", "avist"}


def test_summary_definitions():
    seq = metrics.sequence_metrics(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 10, 10]], float),
                                   np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float), "otb")
    s = metrics.summary([seq])
    assert s["auc"] == pytest.approx(100 * np.mean(seq["success_curve"]))  # mean of 21 values, not trapezoid
    assert s["op50"] == pytest.approx(100 * 2 / 3) and s["op75"] == pytest.approx(100 * 2 / 3)
    assert s["precision"] == pytest.approx(100 * 2 / 3)  # frame 2 is 70.7 px away
    assert metrics.SUCCESS_THRESHOLDS[15] == 0.75  # NumPy's arange is exact where torch's is not


def test_prediction_checks():
    anno = np.array([[0, 0, 10, 10]] * 3, float)
    with pytest.raises(ValueError, match="'seq-a': predictions contain NaN"):
        metrics.sequence_metrics(np.array([[0, 0, 10, 10], [np.nan, 0, 1, 1], [0, 0, 1, 1]]), anno, "otb",
                                 name="seq-a")
    with pytest.raises(ValueError, match="negative"):
        metrics.sequence_metrics(np.array([[0, 0, 10, 10], [0, 0, -1, 1], [0, 0, 1, 1]]), anno, "otb")
    with pytest.raises(ValueError, match="2 predictions for 3"):
        metrics.sequence_metrics(anno[:2], anno, "lasot")
    # A zero-width prediction takes the previous frame's box (here the GT of frame 0 → IoU 1).
    fixed = metrics.sequence_metrics(np.array([[0, 0, 10, 10], [5, 5, 0, 3], [0, 0, 10, 10]]), anno, "otb")
    np.testing.assert_array_equal(fixed["iou"], [1, 1, 1])
    # Other datasets zero-pad missing frames (IoU 0 there).
    padded = metrics.sequence_metrics(anno[:2], anno, "otb")
    np.testing.assert_array_equal(padded["iou"], [1, 1, 0])


def test_got10k_metrics():
    ious = [np.array([1.0, 0.8, 0.6, 0.4]), np.array([1.0, 0.9])]
    m = metrics.got10k_metrics(ious)
    assert m["ao"] == pytest.approx(100 * (0.6 + 0.9) / 2)
    assert m["sr50"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert m["sr75"] == pytest.approx(100 * (1 / 3 + 1) / 2)
