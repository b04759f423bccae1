"""Benchmark metrics exactly as the official analysis code computes them (spec §6.3), in NumPy float64.

Per sequence: IoU with the +1 pixel convention, centre error and normalised centre error per frame, validity per
dataset rule, and the success / precision / normalised-precision curves. Over sequences: the curves are averaged
and AUC = mean of the 21 success values (not a trapezoid), precision at 20 px, normalised precision at 0.20,
OP50 / OP75 by index. GOT-10k's AO / SR are the standard definitions (the official repo leaves them to the server).
"""

from __future__ import annotations

import numpy as np

SUCCESS_THRESHOLDS = np.arange(0, 1.05, 0.05)  # 21 values; NumPy gives exactly 0.75 at index 15
PRECISION_THRESHOLDS = np.arange(0, 51, 1.0)  # pixels
NORM_PRECISION_THRESHOLDS = np.arange(0, 51, 1.0) / 100.0
KINDS = ("otb", "lasot", "uav", "nfs", "avist", "got10k", "trackingnet", "tnl2k", "itb")


def iou_plus1(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """IoU with the +1 pixel convention: tl = max(xy), br = min(xy + wh − 1), inter = Π clamp(br − tl + 1, 0),
    IoU = inter / (w_p·h_p + w_a·h_a − inter)."""
    tl = np.maximum(pred[:, :2], anno[:, :2])
    br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, anno[:, :2] + anno[:, 2:] - 1.0)
    inter = np.prod(np.clip(br - tl + 1.0, 0, None), axis=1)
    union = np.prod(pred[:, 2:], axis=1) + np.prod(anno[:, 2:], axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def center_error(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) between centres xy + (wh − 1)/2."""
    c_pred = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
    c_anno = anno[:, :2] + 0.5 * (anno[:, 2:] - 1.0)
    return np.sqrt(np.sum((c_pred - c_anno) ** 2, axis=1))


def normalized_center_error(pred: np.ndarray, anno: np.ndarray) -> np.ndarray:
    """Centre distance after dividing both centres by the GT (w, h)."""
    c_pred = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
    c_anno = anno[:, :2] + 0.5 * (anno[:, 2:] - 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.sum(((c_pred - c_anno) / anno[:, 2:]) ** 2, axis=1))


def prepare_predictions(pred: np.ndarray, anno: np.ndarray, kind: str, name: str = "") -> np.ndarray:
    """Checks and fixes of the official analysis (§6.3 items 1–4), returning predictions aligned with ``anno``.

    NaN or negative w/h predictions → ValueError; zero w/h predictions (with non-NaN GT) take the previous
    frame's box; LaSOT truncates longer predictions and rejects shorter ones, others truncate or zero-pad;
    frame 0 is set to the GT.
    """
    pred = np.asarray(pred, np.float64).copy()
    anno = np.asarray(anno, np.float64)
    label = f"sequence {name!r}: " if name else ""
    if np.isnan(pred).any():
        raise ValueError(f"{label}predictions contain NaN")
    if (pred[:, 2:] < 0).any():
        raise ValueError(f"{label}predictions contain a negative width or height")
    if np.isnan(anno).any() and kind != "uav":
        raise ValueError(f"{label}annotations contain NaN (allowed for uav only)")
    for i in range(1, len(pred)):
        if i < len(anno) and (pred[i, 2] == 0 or pred[i, 3] == 0) and not np.isnan(anno[i]).any():
            pred[i] = pred[i - 1]
    if len(pred) != len(anno):
        if kind == "lasot":
            if len(pred) < len(anno):
                raise ValueError(f"{label}{len(pred)} predictions for {len(anno)} annotated frames")
            pred = pred[: len(anno)]
        elif len(pred) > len(anno):
            pred = pred[: len(anno)]
        else:
            pred = np.concatenate([pred, np.zeros((len(anno) - len(pred), 4))])
    pred[0] = anno[0]
    return pred


def sequence_metrics(pred, anno, kind: str, visible=None, name: str = "") -> dict:
    """Per-frame values and per-sequence curves of one sequence (§6.3 items 5–10)."""
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; one of {KINDS}")
    anno = np.asarray(anno, np.float64)
    pred = prepare_predictions(pred, anno, kind, name)
    if kind == "avist":
        valid = np.all(anno > 0, axis=1)
    else:
        valid = (anno[:, 2] > 0) & (anno[:, 3] > 0)
    if visible is not None and kind in ("lasot", "avist"):
        valid = valid & np.asarray(visible).astype(bool)
    iou = iou_plus1(pred, anno)
    err = center_error(pred, anno)
    err_norm = normalized_center_error(pred, anno)
    iou[~valid] = -1.0
    err[~valid] = -1.0 if kind == "uav" else np.inf
    err_norm[~valid] = -1.0
    if kind == "lasot" and visible is not None:
        hidden = ~np.asarray(visible).astype(bool)
        err[hidden] = np.inf
        err_norm[hidden] = np.inf
    denominator = len(anno) if kind == "avist" else max(int(valid.sum()), 1)
    success = np.array([np.sum(iou > t) for t in SUCCESS_THRESHOLDS]) / denominator
    precision = np.array([np.sum(err <= t) for t in PRECISION_THRESHOLDS]) / denominator
    norm_precision = np.array([np.sum(err_norm <= t) for t in NORM_PRECISION_THRESHOLDS]) / denominator
    return dict(iou=iou, center_err=err, center_err_norm=err_norm, valid=valid, success_curve=success,
                precision_curve=precision, norm_precision_curve=norm_precision)


def summary(per_sequence: list[dict]) -> dict:
    """Averages over sequences (×100): AUC, precision@20, normalised precision@0.20, OP50, OP75 and the curves."""
    success = 100 * np.mean([m["success_curve"] for m in per_sequence], axis=0)
    precision = 100 * np.mean([m["precision_curve"] for m in per_sequence], axis=0)
    norm_precision = 100 * np.mean([m["norm_precision_curve"] for m in per_sequence], axis=0)
    return dict(auc=float(np.mean(success)), precision=float(precision[20]),
                norm_precision=float(norm_precision[20]), op50=float(success[10]), op75=float(success[15]),
                success_curve=success, precision_curve=precision, norm_precision_curve=norm_precision)


def got10k_metrics(per_sequence_iou: list[np.ndarray]) -> dict:
    """GOT-10k: AO = mean over sequences of the mean IoU of frames 1.. (frame 0 is the given box);
    SR_t = mean over sequences of the fraction of those frames with IoU > t (t = 0.5, 0.75), ×100."""
    ao = np.mean([np.mean(np.clip(iou[1:], 0, None)) for iou in per_sequence_iou])
    sr50 = np.mean([np.mean(iou[1:] > 0.5) for iou in per_sequence_iou])
    sr75 = np.mean([np.mean(iou[1:] > 0.75) for iou in per_sequence_iou])
    return dict(ao=100 * float(ao), sr50=100 * float(sr50), sr75=100 * float(sr75))
