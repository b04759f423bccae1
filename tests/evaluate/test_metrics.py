"""Benchmark metrics against the official analysis code (docs/evaluation.md#metrics; ``processing_refs.npz``
``metric_*``)."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.evaluate import metrics
from helpers import OFFICIAL

with np.load(OFFICIAL / "processing_refs.npz") as _refs:
    # The recorded official metric cases: every case the fixture holds (metric_<case>_pred, _anno, _kind, ...).
    METRIC_CASES = sorted({key.split("_")[1] for key in _refs.files if key.startswith("metric_")})
PER_FRAME = ("iou", "center_err", "center_err_norm")
CURVES = ("success_curve", "precision_curve", "norm_precision_curve")
BOX = [0.0, 0.0, 10.0, 10.0]


@pytest.fixture(scope="module")
def refs():
    with np.load(OFFICIAL / "processing_refs.npz") as data:
        return dict(data)


def run_case(refs, case):
    p = f"metric_{case}_"
    visible = refs.get(p + "visible")
    return p, metrics.sequence_metrics(refs[p + "pred"], refs[p + "anno"], str(refs[p + "kind"]), visible)


def test_fixture_cases_cover_every_rule(refs):
    """The cases below exercise every benchmark's validity rule (a re-recorded fixture must keep them all)."""
    kinds = {str(refs[f"metric_{case}_kind"]) for case in METRIC_CASES}
    assert kinds == {"otb", "lasot", "uav", "nfs", "avist"}


@pytest.mark.parametrize("case", METRIC_CASES)
def test_sequence_metrics_match_official(refs, case):
    p, ours = run_case(refs, case)
    # Validity is boolean logic: identical.
    assert np.array_equal(ours["valid"], refs[p + "valid"])
    for key in PER_FRAME:
        ref, val = refs[p + key], ours[key]
        assert val.shape == ref.shape and val.dtype == np.float64
        # Invalid-frame markers (+inf, −1) are assigned constants: compared exactly.
        assert np.array_equal(np.isposinf(val), np.isposinf(ref)), key
        assert np.array_equal(val == -1.0, ref == -1.0), key
        finite = np.isfinite(ref)
        # Same float64 formulas; torch's vectorised square/sqrt may round the last ulp differently (seen ≤ 1e-14):
        # ≤ 1e-9.
        assert np.all(np.isfinite(val[finite])) and np.max(np.abs(val[finite] - ref[finite])) <= 1e-9, key
    for key in CURVES:
        # count / denominator in float64; a count can only differ if a per-frame value sat within 1e-9 of a
        # threshold, which it does not here: ≤ 1e-9.
        assert ours[key].shape == refs[p + key].shape
        assert np.max(np.abs(ours[key] - refs[p + key])) <= 1e-9, key


def test_thresholds():
    assert len(metrics.SUCCESS_THRESHOLDS) == 21 and metrics.SUCCESS_THRESHOLDS[-1] == 1.0
    assert metrics.SUCCESS_THRESHOLDS[10] == 0.5 and metrics.SUCCESS_THRESHOLDS[15] == 0.75  # OP50 / OP75 indices
    assert len(metrics.PRECISION_THRESHOLDS) == 51 and metrics.PRECISION_THRESHOLDS[20] == 20.0
    assert len(metrics.NORM_PRECISION_THRESHOLDS) == 51 and metrics.NORM_PRECISION_THRESHOLDS[20] == 0.2


def test_per_frame_formulas():
    pred = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0], [20.0, 0.0, 10.0, 10.0]])
    anno = np.array([[0.0, 0.0, 10.0, 10.0]] * 3)
    # +1 convention: columns 5..9 overlap → inter 5·10 = 50, union 150 (exact in float64).
    assert list(metrics.iou_plus1(pred, anno)) == [1.0, 50 / 150, 0.0]
    # centres xy + (wh − 1)/2 = 4.5 → 9.5 → 24.5: errors 0, 5, 20 px (exact).
    assert list(metrics.center_error(pred, anno)) == [0.0, 5.0, 20.0]
    # divided by the GT size 10: 0, 0.5, 2 (float64 rounding only).
    np.testing.assert_allclose(metrics.normalized_center_error(pred, anno), [0.0, 0.5, 2.0], rtol=0, atol=1e-12)


def test_nan_prediction_is_an_error():
    anno = np.array([BOX] * 3)
    with pytest.raises(ValueError, match="'seq-a': predictions contain NaN"):
        metrics.sequence_metrics(np.array([BOX, [np.nan, 0, 1, 1], BOX]), anno, "otb", name="seq-a")


def test_other_input_errors():
    anno = np.array([BOX] * 3)
    with pytest.raises(ValueError, match="negative"):
        metrics.sequence_metrics(np.array([BOX, [0, 0, -1, 1], BOX]), anno, "otb")
    with pytest.raises(ValueError, match="annotations contain NaN"):
        metrics.sequence_metrics(anno, np.array([BOX, [np.nan] * 4, BOX]), "otb")
    with pytest.raises(ValueError, match="2 predictions for 3"):
        metrics.sequence_metrics(anno[:2], anno, "lasot", visible=np.ones(3))
    with pytest.raises(ValueError, match="unknown metric kind"):
        metrics.sequence_metrics(anno, anno, "vot")


def test_zero_size_prediction_takes_the_previous_raw_prediction():
    """Replacement runs before p[0] := GT, sequentially: frames 1 and 2 both get the raw frame-0 prediction."""
    anno = np.array([BOX] * 4)
    pred = np.array([[20.0, 20.0, 10.0, 10.0], [5.0, 5.0, 0.0, 3.0], [1.0, 1.0, 4.0, 0.0], BOX])
    out = metrics.sequence_metrics(pred, anno, "otb")
    assert list(out["iou"]) == [1.0, 0.0, 0.0, 1.0]  # exact: no overlap / identical boxes
    fixed = metrics.prepare_predictions(pred, anno, "otb")
    assert np.array_equal(fixed[1], pred[0]) and np.array_equal(fixed[2], pred[0])


def test_zero_size_prediction_on_a_nan_gt_frame_is_kept():
    anno = np.array([BOX, [np.nan] * 4, BOX])
    pred = np.array([BOX, [3.0, 3.0, 0.0, 2.0], BOX])
    assert np.array_equal(metrics.prepare_predictions(pred, anno, "uav")[1], [3.0, 3.0, 0.0, 2.0])


def test_length_handling():
    anno = np.array([BOX] * 3)
    padded = metrics.sequence_metrics(anno[:2], anno, "otb")
    assert list(padded["iou"]) == [1.0, 1.0, 0.0]  # zero-padded third frame: no overlap
    longer = np.concatenate([anno, [[50.0, 50.0, 5.0, 5.0]]])
    for kind in ("otb", "lasot"):
        out = metrics.sequence_metrics(longer, anno, kind, visible=np.ones(3) if kind == "lasot" else None)
        assert list(out["iou"]) == [1.0, 1.0, 1.0]  # truncated


def test_invalid_frame_markers_and_denominators():
    anno = np.array([BOX, [0.0, 0.0, 0.0, 10.0], BOX, [1.0, 3.0, 10.0, 10.0]])
    pred = np.array([BOX, BOX, [40.0, 0.0, 10.0, 10.0], [1.0, 3.0, 10.0, 10.0]])
    otb = metrics.sequence_metrics(pred, anno, "otb")
    assert list(otb["valid"]) == [True, False, True, True]
    assert otb["iou"][1] == -1.0 and otb["center_err"][1] == np.inf and otb["center_err_norm"][1] == -1.0
    assert otb["success_curve"][0] == 2 / 3  # frames 0 and 3 of 3 valid
    assert otb["norm_precision_curve"][0] == 1.0  # QUIRK: the invalid −1 counts as a success (frame 2 fails)
    uav = metrics.sequence_metrics(pred, anno, "uav")
    assert uav["center_err"][1] == -1.0 and uav["precision_curve"][0] == 1.0  # QUIRK: 3 of 3 "succeed"
    # AVisT: x = 0 makes frames 0, 1, 2 invalid (all four values must be > 0), denominator all 4 frames.
    avist = metrics.sequence_metrics(pred, anno, "avist", visible=np.ones(4))
    assert list(avist["valid"]) == [False, False, False, True]
    assert avist["success_curve"][0] == 1 / 4 and avist["precision_curve"][0] == 1 / 4


def test_lasot_not_visible_frames_are_inf():
    anno = np.array([BOX, BOX, [0.0, 0.0, 0.0, 0.0]])
    visible = np.array([1, 0, 1], np.uint8)
    out = metrics.sequence_metrics(anno, anno, "lasot", visible=visible)
    assert list(out["valid"]) == [True, False, False]
    assert list(out["center_err"]) == [0.0, np.inf, np.inf]
    assert list(out["center_err_norm"]) == [0.0, np.inf, -1.0]  # frame 2 is visible but invalid: −1
    assert out["norm_precision_curve"][0] == 2.0  # one valid frame, two "successes" (frames 0 and 2)


def test_summary_definitions():
    anno = np.array([BOX] * 3)
    seq_a = metrics.sequence_metrics(np.array([BOX, BOX, [50.0, 50.0, 10.0, 10.0]]), anno, "otb")
    seq_b = metrics.sequence_metrics(np.array([BOX, [0.0, 0.0, 10.0, 8.0], BOX]), anno, "otb")  # IoU 0.8
    s = metrics.summary([seq_a, seq_b])
    success = 100 * (seq_a["success_curve"] + seq_b["success_curve"]) / 2
    np.testing.assert_allclose(s["success_curve"], success, rtol=0, atol=1e-12)  # float64 mean
    assert s["auc"] == pytest.approx(np.mean(success), abs=1e-12)  # mean of 21 values, not a trapezoid
    assert s["op50"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-12)
    assert s["op75"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-12)  # 0.8 > 0.75
    assert s["precision"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-12)  # frame 2 of a is 70.7 px away
    assert s["norm_precision"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-12)


def test_got10k_metrics_pool_frames_and_keep_the_sequence_mean_apart():
    ious = [np.array([0.8, 0.6, 0.4]), np.array([0.9])]  # already the scored frames of two sequences
    got = metrics.got10k_metrics(ious)
    assert got["ao"] == pytest.approx(100 * (0.8 + 0.6 + 0.4 + 0.9) / 4, abs=1e-12)  # pooled: the benchmark's
    assert got["sr50"] == pytest.approx(100 * 3 / 4, abs=1e-12)
    assert got["sr75"] == pytest.approx(100 * 2 / 4, abs=1e-12)
    assert got["ao_seq_mean"] == pytest.approx(100 * (0.6 + 0.9) / 2, abs=1e-12)
    assert got["sr50_seq_mean"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="scored frame"):
        metrics.got10k_metrics([np.array([])])


def test_got10k_iou_clips_to_the_image_and_has_no_plus_one():
    # A 10x10 box at (15, 15) in a 20x20 image is cut to (15, 15, 5, 5) before the IoU, as the toolkit clips it.
    assert metrics.got10k_iou([[15, 15, 10, 10]], [[15, 15, 5, 5]], resolution=(20, 20))[0] == pytest.approx(1.0)
    assert metrics.got10k_iou([[15, 15, 10, 10]], [[15, 15, 5, 5]])[0] == pytest.approx(25 / 100, abs=1e-12)
    # The toolkit moves x, y into the image but keeps w, h (clipped to W − x): (−5, −5, 10, 10) → (0, 0, 10, 10).
    iou = metrics.got10k_iou([[-5, -5, 10, 10]], [[0, 0, 10, 10]], resolution=(20, 20))
    assert iou[0] == pytest.approx(1.0, abs=1e-12)
    assert metrics.got10k_iou([[0, 0, 2, 2]], [[1, 1, 2, 2]])[0] == pytest.approx(1 / 7, abs=1e-12)  # no +1


def test_got10k_sequence_iou_drops_frame_zero_and_covered_frames():
    anno = np.array([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4]], float)
    pred = np.array([[0, 0, 4, 4], [0, 0, 4, 2], [9, 9, 1, 1], [0, 0, 4, 4]], float)
    iou = metrics.got10k_sequence_iou(pred, anno, cover=[8, 3, 0, 8], resolution=(10, 10))
    np.testing.assert_allclose(iou, [0.5, 1.0], atol=1e-12)  # frame 2 (cover 0) not scored
    with pytest.raises(ValueError, match="cover labels"):
        metrics.got10k_sequence_iou(pred, anno, cover=[8, 8], resolution=(10, 10), name="seq")
