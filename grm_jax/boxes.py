"""Box arithmetic shared by the losses and the tracker (docs/training.md#giou-and-l1, docs/tracking.md#clipping).

Every function takes boxes with the four coordinates in the last axis and any number of leading (batch) axes,
is pure ``jax.numpy`` and works under ``jax.jit``. The operation order follows the official PyTorch code
(DETR/OSTrack ``box_ops``) so that float32 results agree to the last bit or two. ``clip_box`` additionally accepts
NumPy arrays and then computes in NumPy (float64 on the host, as the tracker's Python floats do).

Box formats: ``cxcywh`` = (centre x, centre y, width, height); ``xywh`` = (left, top, width, height);
``xyxy`` = (left, top, right, bottom).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def cxcywh_to_xyxy(box):
    """(cx, cy, w, h) → (cx − 0.5·w, cy − 0.5·h, cx + 0.5·w, cy + 0.5·h)."""
    cx, cy, w, h = jnp.moveaxis(jnp.asarray(box), -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xywh_to_xyxy(box):
    """(x1, y1, w, h) → (x1, y1, x1 + w, y1 + h)."""
    x1, y1, w, h = jnp.moveaxis(jnp.asarray(box), -1, 0)
    return jnp.stack([x1, y1, x1 + w, y1 + h], axis=-1)


def xyxy_to_xywh(box):
    """(x1, y1, x2, y2) → (x1, y1, x2 − x1, y2 − y1)."""
    x1, y1, x2, y2 = jnp.moveaxis(jnp.asarray(box), -1, 0)
    return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)


def box_area(box_xyxy):
    """Area (x2 − x1)·(y2 − y1) of x1y1x2y2 boxes (no clamping: a flipped box has negative area)."""
    box_xyxy = jnp.asarray(box_xyxy)
    return (box_xyxy[..., 2] - box_xyxy[..., 0]) * (box_xyxy[..., 3] - box_xyxy[..., 1])


def _clamp_min0(x):
    """``max(x, 0)`` with PyTorch ``clamp(min=0)``'s gradient (1 where x ≥ 0, else 0; no split at the tie)."""
    return jnp.where(x >= 0, x, jnp.zeros_like(x))


def box_iou(b1, b2):
    """Element-wise IoU of paired x1y1x2y2 boxes ``b1[i]``, ``b2[i]`` (not a pairwise matrix).

    lt = max(b1[:2], b2[:2]), rb = min(b1[2:], b2[2:]), (iw, ih) = clamp(rb − lt, min=0),
    inter = iw·ih, union = area(b1) + area(b2) − inter, iou = inter / union.

    Returns ``(iou, union)``, each with the boxes' leading shape.
    """
    b1, b2 = jnp.asarray(b1), jnp.asarray(b2)
    lt = jnp.maximum(b1[..., :2], b2[..., :2])
    rb = jnp.minimum(b1[..., 2:], b2[..., 2:])
    wh = _clamp_min0(rb - lt)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(b1) + box_area(b2) - inter
    return inter / union, union


def generalized_box_iou(b1, b2):
    """Element-wise generalised IoU of paired x1y1x2y2 boxes (DETR/OSTrack ``box_ops``).

    With (iou, U) from :func:`box_iou`, the enclosing box lt = min(b1[:2], b2[:2]), rb = max(b1[2:], b2[2:]),
    (cw, ch) = clamp(rb − lt, min=0), C = cw·ch:  GIoU = iou − (C − U)/C.

    The official code asserts x2 ≥ x1 and y2 ≥ y1 for both inputs; that check is left to the caller (it cannot
    fail for the model's sigmoid sizes). Returns ``(giou, iou)``.
    """
    b1, b2 = jnp.asarray(b1), jnp.asarray(b2)
    iou, union = box_iou(b1, b2)
    lt = jnp.minimum(b1[..., :2], b2[..., :2])
    rb = jnp.maximum(b1[..., 2:], b2[..., 2:])
    wh = _clamp_min0(rb - lt)
    area = wh[..., 0] * wh[..., 1]
    return iou - (area - union) / area, iou


def clip_box(box_xywh, height, width, margin=10):
    """The tracker's ``clip_box`` (official ``lib/utils/box_ops.py``; docs/tracking.md#clipping) on x1,y1,w,h boxes
    inside an H×W image.

    x2 = x1 + w, y2 = y1 + h (from the *unclipped* x1, y1), then
    x1' = min(max(0, x1), W − margin),  x2' = min(max(margin, x2), W),
    y1' = min(max(0, y1), H − margin),  y2' = min(max(margin, y2), H),
    w'  = max(margin, x2' − x1'),       h'  = max(margin, y2' − y1');  returns (x1', y1', w', h').

    NumPy (or list/float) input is computed with NumPy, in float64 for float64/Python-float input, exactly like the
    official code's Python floats; a ``jax.Array`` (or tracer) input is computed with ``jax.numpy``. ``height``,
    ``width`` broadcast against the boxes' leading shape. (Unlike Python's ``max``/``min``, NaN coordinates
    propagate instead of being replaced by the bound.)
    """
    xp = jnp if isinstance(box_xywh, jax.Array) else np
    box = xp.asarray(box_xywh)
    if xp is np and not np.issubdtype(box.dtype, np.floating):
        box = box.astype(np.float64)
    x1, y1, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    x2, y2 = x1 + w, y1 + h
    x1 = xp.minimum(xp.maximum(0, x1), width - margin)
    x2 = xp.minimum(xp.maximum(margin, x2), width)
    y1 = xp.minimum(xp.maximum(0, y1), height - margin)
    y2 = xp.minimum(xp.maximum(margin, y2), height)
    w = xp.maximum(margin, x2 - x1)
    h = xp.maximum(margin, y2 - y1)
    return xp.stack([x1, y1, w, h], axis=-1)
