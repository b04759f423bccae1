"""Crops and normalisation shared by training and tracking (spec §5.1, §5.2, §4.5 step 5).

The augmentation pipeline of §4.5 (jitter, flips, brightness, rejection) lives in ``grm_jax/data/transforms.py``
and calls these functions.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from grm_jax.config import IMAGENET_MEAN, IMAGENET_STD


def crop_window(box, factor: float) -> tuple[int, int, int]:
    """(x1, y1, crop_sz) of the square crop around ``box`` (x, y, w, h px) (spec §5.1 steps 1–2).

    crop_sz = ceil(sqrt(w·h)·factor) (ValueError if < 1); x1 = round(x + w/2 − crop_sz/2), y1 likewise, with
    Python's ``round`` (half to even).
    """
    x, y, w, h = (float(v) for v in box)
    crop_sz = math.ceil(math.sqrt(w * h) * factor) if w * h > 0 else 0
    if not crop_sz >= 1:
        raise ValueError(f"box {tuple(box)} with factor {factor} gives an empty crop (crop_sz {crop_sz})")
    x1 = round(x + 0.5 * w - crop_sz * 0.5)
    y1 = round(y + 0.5 * h - crop_sz * 0.5)
    return x1, y1, crop_sz


def sample_target(image: np.ndarray, box, factor: float, output_size: int | None):
    """The official ``sample_target``: (crop uint8 out×out×3, resize_factor, mask bool out×out, True = padding).

    Window [x1, x1+crop_sz) × [y1, y1+crop_sz); paddings left = max(0, −x1), right = max(x2 − W + 1, 0),
    top = max(0, −y1), bottom = max(y2 − H + 1, 0) (QUIRK +1: the last image row/column is never copied);
    black constant padding; OpenCV INTER_LINEAR resize; the mask (ones, copied region 0) is resized as float and
    cast to bool. resize_factor = output_size / crop_sz.
    """
    if not np.all(np.isfinite(np.asarray(box, np.float64))):
        raise ValueError(f"box {tuple(box)} is not finite")
    x1, y1, crop_sz = crop_window(box, factor)
    height, width = image.shape[:2]
    x2, y2 = x1 + crop_sz, y1 + crop_sz
    left, right = max(0, -x1), max(x2 - width + 1, 0)
    top, bottom = max(0, -y1), max(y2 - height + 1, 0)
    region = image[y1 + top:y2 - bottom, x1 + left:x2 - right]
    crop = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_CONSTANT)
    mask = np.ones((crop_sz, crop_sz), np.float32)
    end_y = None if bottom == 0 else -bottom
    end_x = None if right == 0 else -right
    mask[top:end_y, left:end_x] = 0
    if output_size is None:
        return crop, 1.0, mask.astype(bool)
    resize_factor = output_size / crop_sz
    crop = cv2.resize(crop, (output_size, output_size))
    mask = cv2.resize(mask, (output_size, output_size)).astype(bool)
    return crop, resize_factor, mask


def normalize_image(image_u8: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """(u8/255 − mean)/std in float32, HWC (spec §5.2)."""
    x = image_u8.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def transform_box_to_crop(box_gt, box_crop_source, resize_factor: float, output_size: int) -> np.ndarray:
    """GT box in crop coordinates, normalised (x1, y1, w, h) (spec §4.5 step 5).

    centre_out = (out − 1)/2 + (c_gt − c_src)·rf; wh_out = wh_gt·rf; box = (centre_out − wh_out/2, wh_out)/out,
    with c = xy + wh/2 of each box (QUIRK: (out − 1)/2, while tracking maps back with out/2).
    """
    gt = np.asarray(box_gt, np.float64)
    src = np.asarray(box_crop_source, np.float64)
    centre_gt = gt[:2] + 0.5 * gt[2:4]
    centre_src = src[:2] + 0.5 * src[2:4]
    centre_out = (output_size - 1) / 2 + (centre_gt - centre_src) * resize_factor
    wh_out = gt[2:4] * resize_factor
    return np.concatenate([centre_out - 0.5 * wh_out, wh_out]) / output_size
