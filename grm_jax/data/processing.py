"""Crops, normalisation and the crop-frame ground truth shared by training and tracking (docs/tracking.md#crop,
docs/tracking.md#pre-processing, docs/training.md#ground-truth-in-the-crop), bit-exact with the official code.

The rest of the training processing (docs/training.md#processing-and-augmentation: joint transform, jitter, per-crop
transform, rejection) lives in :mod:`grm_jax.data.transforms` and calls these functions; the tracker
(:mod:`grm_jax.track.tracker`) uses them for its host-side crops.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from grm_jax.config import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["crop_paddings", "crop_window", "normalize_image", "sample_target", "transform_box_to_crop"]


def crop_window(box, factor: float) -> tuple[int, int, int]:
    """``(x1, y1, crop_sz)`` of the square crop window around ``box`` = (x, y, w, h) px (docs/tracking.md#crop,
    steps 1–2).

    crop_sz = ceil(sqrt(w·h)·factor), a ValueError naming the box if it is < 1 (or w·h ≤ 0);
    x1 = round(x + 0.5·w − 0.5·crop_sz), y1 = round(y + 0.5·h − 0.5·crop_sz) with Python's ``round`` (half to
    even, returns int), e.g. round(−29.5) = −30. The window is [x1, x1 + crop_sz) × [y1, y1 + crop_sz).
    """
    x, y, w, h = (float(v) for v in box)
    area = w * h
    # The official math.sqrt raises on a negative area; a zero area gives crop_sz 0. Both are "too small".
    crop_sz = math.ceil(math.sqrt(area) * factor) if area > 0 else 0
    if not crop_sz >= 1:
        raise ValueError(f"box {tuple(box)} with factor {factor} gives an empty crop (crop_sz {crop_sz} < 1)")
    x1 = round(x + 0.5 * w - crop_sz * 0.5)
    y1 = round(y + 0.5 * h - crop_sz * 0.5)
    return x1, y1, crop_sz


def crop_paddings(x1: int, y1: int, crop_sz: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding of the window in an image of ``height`` × ``width``
    (docs/tracking.md#crop, step 3).

    x2 = x1 + crop_sz, y2 = y1 + crop_sz; left = max(0, −x1), right = max(x2 − W + 1, 0), top = max(0, −y1),
    bottom = max(y2 − H + 1, 0). QUIRK (+1): a window that reaches the right/bottom border never copies the last
    image column/row; it is padding instead.
    """
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    return max(0, -x1), max(x2 - width + 1, 0), max(0, -y1), max(y2 - height + 1, 0)


def sample_target(image: np.ndarray, box, factor: float, output_size: int | None):
    """The official ``sample_target`` (``lib/train/data/processing_utils.py``; docs/tracking.md#crop):
    ``(crop uint8 out×out×3, resize_factor, mask bool out×out)``.

    The copied region is ``image[y1 + top : y2 − bottom, x1 + left : x2 − right]`` (paddings from
    :func:`crop_paddings`), padded with black (``cv2.copyMakeBorder``, ``BORDER_CONSTANT``) to crop_sz × crop_sz
    and resized with ``cv2.resize`` (INTER_LINEAR). The padding mask (True = padding) is float64 ones of the padded
    crop's shape with the copied region set to 0, resized the same way and cast to bool (any non-zero ⇒ True).
    resize_factor = output_size / crop_sz.

    As in the official code the slice uses plain NumPy indexing, so a window lying wholly outside the image gives
    the same (degenerate) crop and mask the official code gives. With ``output_size=None`` nothing is resized and
    ``(crop, 1.0, mask)`` is returned (the official returns ``(crop, mask, 1.0)`` in that case; the order here is
    the same as with a size).
    """
    if not np.all(np.isfinite(np.asarray(box, np.float64))):
        raise ValueError(f"box {tuple(box)} is not finite")
    x1, y1, crop_sz = crop_window(box, factor)
    height, width = image.shape[:2]
    left, right, top, bottom = crop_paddings(x1, y1, crop_sz, height, width)
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    region = image[y1 + top:y2 - bottom, x1 + left:x2 - right]
    crop = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_CONSTANT)
    mask = np.ones(crop.shape[:2], np.float64)  # np.ones default dtype, as the official att_mask
    mask[top:(-bottom if bottom else None), left:(-right if right else None)] = 0.0
    if output_size is None:
        return crop, 1.0, mask.astype(bool)
    resize_factor = output_size / crop_sz
    crop = cv2.resize(crop, (output_size, output_size))
    mask = cv2.resize(mask, (output_size, output_size)).astype(bool)
    return crop, resize_factor, mask


def normalize_image(image_u8: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(u8 / 255 − mean) / std per channel, float32 HWC (docs/tracking.md#pre-processing).

    Evaluated in float32 in the official order (``tensor.float() / 255.0``, then ``− mean``, then ``/ std``), which
    reproduces the official tensors bit for bit.
    """
    x = image_u8.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def transform_box_to_crop(box_gt, box_crop_center_source, resize_factor: float, output_size: int) -> np.ndarray:
    """Ground-truth box in the crop, normalised (x1, y1, w, h), float64: the official ``transform_image_to_crop``
    (docs/training.md#ground-truth-in-the-crop).

    With c = xy + 0.5·wh of each box (``box_crop_center_source`` is the box the crop was centred on):
    centre_out = (out − 1)/2 + (c_gt − c_src)·rf, wh_out = wh_gt·rf, box = (centre_out − 0.5·wh_out, wh_out) / out.
    QUIRK: (out − 1)/2 here, while the tracker maps its output back with out/2 (docs/tracking.md#map-back).
    """
    gt = np.asarray(box_gt, np.float64)
    src = np.asarray(box_crop_center_source, np.float64)
    centre_gt = gt[:2] + 0.5 * gt[2:4]
    centre_src = src[:2] + 0.5 * src[2:4]
    centre_out = (output_size - 1) / 2 + (centre_gt - centre_src) * resize_factor
    wh_out = gt[2:4] * resize_factor
    return np.concatenate([centre_out - 0.5 * wh_out, wh_out]) / output_size
