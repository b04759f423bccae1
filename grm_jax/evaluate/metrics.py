"""Benchmark metrics as the official analysis code computes them (``lib/test/analysis/extract_results.py``,
``lib/test/analysis/plot_results.py``; docs/evaluation.md#metrics), NumPy float64.

Per sequence (:func:`sequence_metrics`): prediction checks and fixes, per-frame IoU with the +1 pixel convention,
centre error and normalised centre error, validity by dataset rule, the marker values of invalid frames, and the
success / precision / normalised-precision curves. Over sequences (:func:`summary`): the curves are averaged and
AUC = mean of the 21 success values (not a trapezoid), precision at 20 px, normalised precision at 0.20, OP50 /
OP75 by index. GOT-10k's AO / SR (:func:`got10k_metrics`) are not computed by the official GRM code (it leaves
GOT-10k to the benchmark's server); they follow the GOT-10k toolkit: its IoU (no +1, boxes clipped to the image),
frames with ``cover.label`` 0 dropped, frames of all sequences pooled.

Kinds (the official ``dataset`` argument): ``otb``, ``nfs``, ``uav``, ``lasot``, ``avist`` carry rules; the other
names are accepted and follow the default rules.
"""

from __future__ import annotations

import numpy as np

# IoU thresholds 0, 0.05, …, 1 (21). NumPy gives 0.65 and 0.75 exactly at indices 13 and 15 where torch 2.13's
# arange gives 0.6500000000000001 / 0.7500000000000001; only an IoU equal to one of those two doubles would be
# counted differently. OP50 / OP75 are read by index (10, 15), never by float equality.
SUCCESS_THRESHOLDS = np.arange(0, 1.05, 0.05)
PRECISION_THRESHOLDS = np.arange(0, 51, 1.0)  # pixels, 0..50
NORM_PRECISION_THRESHOLDS = np.arange(0, 51, 1.0) / 100.0  # 0..0.50; as torch.arange(0, 51) / 100.0 (bit-equal)
OP50_INDEX, OP75_INDEX = 10, 15
PRECISION_INDEX = 20  # 20 px, and 0.20 on the normalised curve
KINDS = ("otb", "lasot", "uav", "nfs", "avist", "got10k", "trackingnet", "tnl2k", "itb")

__all__ = [
    "KINDS", "NORM_PRECISION_THRESHOLDS", "PRECISION_THRESHOLDS", "SUCCESS_THRESHOLDS", "box_centers",
    "center_error", "curve", "got10k_iou", "got10k_metrics", "got10k_sequence_iou", "iou_plus1",
    "normalized_center_error", "prepare_predictions", "sequence_metrics", "summary", "valid_frames",
]


# ---------------------------------------------------------------------------------------------------------------
# Per-frame quantities, (N, 4) boxes x, y, w, h.


def iou_plus1(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Per-frame IoU with the +1 pixel convention (official ``calc_iou_overlap``;
    docs/evaluation.md#overlap-and-centre-error):

    tl = max(p_xy, a_xy), br = min(p_xy + p_wh − 1, a_xy + a_wh − 1), inter = Π clamp(br − tl + 1, 0),
    IoU = inter / (p_w·p_h + a_w·a_h − inter). Evaluated in the official order; rounding can give 1 + 1 ulp for
    identical boxes (then counted as a success at threshold 1.0, as officially).
    """
    pred, anno = np.asarray(pred, np.float64), np.asarray(anno, np.float64)
    tl = np.maximum(pred[:, :2], anno[:, :2])
    br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, anno[:, :2] + anno[:, 2:] - 1.0)
    sides = np.clip(br - tl + 1.0, 0.0, None)
    inter = sides[:, 0] * sides[:, 1]
    union = pred[:, 2] * pred[:, 3] + anno[:, 2] * anno[:, 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def box_centers(boxes: np.ndarray) -> np.ndarray:
    """Centres with the +1 pixel convention: c = xy + 0.5·(wh − 1) (the −0.5 cancels in every difference used
    here; it is kept so that the rounding is the official one)."""
    boxes = np.asarray(boxes, np.float64)
    return boxes[:, :2] + 0.5 * (boxes[:, 2:] - 1.0)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance sqrt((a − b)₀² + (a − b)₁²)."""
    d = a - b
    return np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)


def center_error(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Per-frame centre error in pixels (docs/evaluation.md#overlap-and-centre-error): ‖c_p − c_a‖₂ with
    c = xy + 0.5·(wh − 1)."""
    return _distance(box_centers(pred), box_centers(anno))


def normalized_center_error(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Per-frame normalised centre error (docs/evaluation.md#overlap-and-centre-error): ‖c_p / a_wh − c_a / a_wh‖₂ (both
    centres divided by the GT (w, h) first, then subtracted, as officially)."""
    wh = np.asarray(anno, np.float64)[:, 2:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return _distance(box_centers(pred) / wh, box_centers(anno) / wh)


# ---------------------------------------------------------------------------------------------------------------
# Sequence rules.


def prepare_predictions(pred, anno, kind: str, name: str = "") -> np.ndarray:
    """Checks and fixes of the official ``calc_seq_err_robust`` (docs/evaluation.md#prediction-checks), in the
    official order; returns predictions aligned with ``anno``.

    1. ValueError if a prediction is NaN or has w < 0 or h < 0; NaN GT is a ValueError except for ``uav``.
    2. For i = 1.. (sequentially, before the length fix and before frame 0 is overwritten): a prediction with
       w == 0 or h == 0 whose GT row has no NaN takes the (possibly already replaced) prediction of frame i − 1.
    3. Length: ``lasot`` truncates longer predictions and rejects shorter ones (ValueError); other kinds truncate
       or append zero rows.
    4. p[0] := a[0].
    """
    pred = np.array(pred, np.float64, copy=True).reshape(-1, 4)
    anno = np.asarray(anno, np.float64).reshape(-1, 4)
    label = f"sequence {name!r}: " if name else ""
    if np.isnan(pred).any():
        raise ValueError(f"{label}predictions contain NaN")
    if (pred[:, 2:] < 0).any():
        raise ValueError(f"{label}predictions contain a negative width or height")
    if np.isnan(anno).any() and kind != "uav":
        raise ValueError(f"{label}annotations contain NaN (allowed for uav only)")
    if len(anno) == 0:
        raise ValueError(f"{label}no annotated frame")
    for i in range(1, min(len(pred), len(anno))):
        if (pred[i, 2] == 0 or pred[i, 3] == 0) and not np.isnan(anno[i]).any():
            pred[i] = pred[i - 1]
    if len(pred) > len(anno):
        pred = pred[: len(anno)]
    elif len(pred) < len(anno):
        if kind == "lasot":
            raise ValueError(f"{label}{len(pred)} predictions for {len(anno)} annotated frames")
        pred = np.concatenate([pred, np.zeros((len(anno) - len(pred), 4))])
    pred[0] = anno[0]
    return pred


def valid_frames(anno, kind: str, visible=None) -> np.ndarray:
    """Valid frames (docs/evaluation.md#valid-frames): a_w > 0 and a_h > 0 (``avist``: all four GT values > 0), and
    ``visible`` where given (the official applies ``target_visible`` whenever the loader provides one: LaSOT and
    AVisT)."""
    anno = np.asarray(anno, np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        valid = np.all(anno > 0, axis=1) if kind == "avist" else (anno[:, 2] > 0) & (anno[:, 3] > 0)
    if visible is not None:
        valid = valid & np.asarray(visible).astype(bool).reshape(-1)
    return valid


def curve(values: np.ndarray, thresholds: np.ndarray, denominator: int, above: bool) -> np.ndarray:
    """Fraction of frames passing each threshold: #(v > t) / denominator if ``above`` (success, strict), else
    #(v ≤ t) / denominator (precision)."""
    values = np.asarray(values, np.float64)[:, None]
    passed = values > thresholds[None, :] if above else values <= thresholds[None, :]
    return passed.sum(axis=0) / denominator


def sequence_metrics(pred, anno, kind: str, visible=None, name: str = "") -> dict:
    """Per-frame values and per-sequence curves of one sequence (docs/evaluation.md#metrics).

    Returns ``iou``, ``center_err``, ``center_err_norm`` (N,) float64, ``valid`` (N,) bool and ``success_curve``
    (21), ``precision_curve`` (51), ``norm_precision_curve`` (51). Invalid frames: IoU −1; centre error +inf
    (``uav``: −1, QUIRK: a success at every precision threshold); normalised error −1 (QUIRK: a success); for
    ``lasot`` every not-visible frame gets +inf for both centre errors. A NaN IoU on a valid frame is a
    ValueError. Denominator: the number of valid frames (``avist``: all frames, so invalid frames are failures);
    success(t) = #(IoU > t)/den, precision(t) = #(err ≤ t)/den. ``visible=None`` means every frame is visible.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; one of {KINDS}")
    label = f"sequence {name!r}: " if name else ""
    anno = np.asarray(anno, np.float64).reshape(-1, 4)
    if visible is not None and len(np.asarray(visible).reshape(-1)) != len(anno):
        raise ValueError(f"{label}{len(np.asarray(visible).reshape(-1))} visibility flags for {len(anno)} frames")
    pred = prepare_predictions(pred, anno, kind, name)
    valid = valid_frames(anno, kind, visible)
    iou = iou_plus1(pred, anno)
    err = center_error(pred, anno)
    err_norm = normalized_center_error(pred, anno)
    iou[~valid] = -1.0
    err[~valid] = -1.0 if kind == "uav" else np.inf
    err_norm[~valid] = -1.0
    if kind == "lasot" and visible is not None:
        hidden = ~np.asarray(visible).astype(bool).reshape(-1)
        err[hidden] = np.inf
        err_norm[hidden] = np.inf
    if np.isnan(iou).any():
        raise ValueError(f"{label}NaN in the computed overlap")
    denominator = len(anno) if kind == "avist" else int(valid.sum())
    if denominator == 0:
        raise ValueError(f"{label}no valid frame")
    return {"iou": iou, "center_err": err, "center_err_norm": err_norm, "valid": valid,
            "success_curve": curve(iou, SUCCESS_THRESHOLDS, denominator, above=True),
            "precision_curve": curve(err, PRECISION_THRESHOLDS, denominator, above=False),
            "norm_precision_curve": curve(err_norm, NORM_PRECISION_THRESHOLDS, denominator, above=False)}


# ---------------------------------------------------------------------------------------------------------------
# Over sequences.


def summary(per_sequence) -> dict:
    """Averages over sequences, ×100 (docs/evaluation.md#curves-and-scores), from a list of
    :func:`sequence_metrics` dicts.

    success = 100·mean_seq(success_curve) etc.; AUC = mean of the 21 success values; precision = precision
    curve at 20 px (index 20); norm_precision = normalised curve at 0.20 (index 20); OP50 / OP75 = success at
    indices 10 / 15 (t = 0.50 / 0.75). Returns those five floats and the three averaged curves.
    """
    per_sequence = list(per_sequence)
    if not per_sequence:
        raise ValueError("no sequences to summarise")
    success = 100 * np.mean([m["success_curve"] for m in per_sequence], axis=0)
    precision = 100 * np.mean([m["precision_curve"] for m in per_sequence], axis=0)
    norm_precision = 100 * np.mean([m["norm_precision_curve"] for m in per_sequence], axis=0)
    return {"auc": float(np.mean(success)), "precision": float(precision[PRECISION_INDEX]),
            "norm_precision": float(norm_precision[PRECISION_INDEX]), "op50": float(success[OP50_INDEX]),
            "op75": float(success[OP75_INDEX]), "success_curve": success, "precision_curve": precision,
            "norm_precision_curve": norm_precision}


def got10k_iou(pred, anno, resolution=None) -> np.ndarray:
    """IoU as the GOT-10k toolkit computes it (``rect_iou`` in its ``got10k/utils/metrics.py``), float64.

    No +1 pixel convention. With ``resolution = (W, H)`` both boxes are first clipped to the image, in this order:
    x ← clip(x, 0, W), y ← clip(y, 0, H), w ← clip(w, 0, W − x), h ← clip(h, 0, H − y) (x, y already clipped).
    IoU = inter / (area₁ + area₂ − inter + ε), ε = float64 machine epsilon, then clipped to [0, 1].
    """
    boxes = [np.array(b, np.float64).reshape(-1, 4) for b in (pred, anno)]
    if resolution is not None:
        width, height = float(resolution[0]), float(resolution[1])
        for b in boxes:
            b[:, 0] = np.clip(b[:, 0], 0, width)
            b[:, 1] = np.clip(b[:, 1], 0, height)
            b[:, 2] = np.clip(b[:, 2], 0, width - b[:, 0])
            b[:, 3] = np.clip(b[:, 3], 0, height - b[:, 1])
    a, b = boxes
    w = np.maximum(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    h = np.maximum(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = w * h
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + np.finfo(np.float64).eps), 0.0, 1.0)


def got10k_sequence_iou(pred, anno, cover, resolution, name: str = "") -> np.ndarray:
    """The IoUs one GOT-10k sequence contributes to AO / SR: frames 1.. (frame 0 is the given box), those whose
    ``cover.label`` is > 0 (the target visible), each by :func:`got10k_iou` with the image ``resolution``."""
    pred, anno = np.asarray(pred, np.float64).reshape(-1, 4), np.asarray(anno, np.float64).reshape(-1, 4)
    if pred.shape != anno.shape:
        raise ValueError(f"{name}: {len(pred)} predicted boxes for {len(anno)} annotated frames")
    cover = np.asarray(cover).reshape(-1)
    if len(cover) != len(anno):
        raise ValueError(f"{name}: {len(cover)} cover labels for {len(anno)} annotated frames")
    return got10k_iou(pred[1:], anno[1:], resolution)[cover[1:] > 0]


def got10k_metrics(per_sequence_iou) -> dict:
    """GOT-10k AO, SR0.50, SR0.75 (×100) from :func:`got10k_sequence_iou` of every sequence.

    As the GOT-10k toolkit's report (``ExperimentGOT10k.report`` / ``_evaluate``) and the server: the frames of
    all sequences are pooled, AO = their mean IoU, SR_t = the fraction with IoU > t (strict; the toolkit reports
    t = 0.5, the server also 0.75), so longer sequences weigh more. ``*_seq_mean``: the same per sequence, then
    averaged over sequences (each sequence weighs the same; not the benchmark's number).
    """
    frames = [np.asarray(iou, np.float64).reshape(-1) for iou in per_sequence_iou]
    if not frames or all(len(f) == 0 for f in frames):
        raise ValueError("GOT-10k metrics need at least one scored frame (frames after frame 0 with cover > 0)")
    pooled = np.concatenate(frames)
    scored = [f for f in frames if len(f)]
    out = {"ao": pooled.mean(), "sr50": np.mean(pooled > 0.5), "sr75": np.mean(pooled > 0.75),
           "ao_seq_mean": np.mean([f.mean() for f in scored]),
           "sr50_seq_mean": np.mean([np.mean(f > 0.5) for f in scored]),
           "sr75_seq_mean": np.mean([np.mean(f > 0.75) for f in scored])}
    return {key: 100 * float(value) for key, value in out.items()}
