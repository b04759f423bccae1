"""``sample_target`` inside the compiled step: crop + bilinear resize of a batch of frames on the device.

Same geometry as the official crop (docs/tracking.md#crop): crop_sz = ceil(sqrt(w·h)·factor), origin rounded half to
even, black outside the image, and the +1 quirk (the last image row/column never enters a crop). The resize is OpenCV's
uint8 INTER_LINEAR in integer arithmetic: half-pixel sample positions, 11-bit fixed-point weights, its vectorised
vertical rounding, and its switch to INTER_AREA for an exact 2× downscale. Downscaled crops (the tracking case) are
bit-identical to OpenCV; upscaled ones can differ by one grey level where OpenCV's double-precision sample position
rounds a weight the other way (measured in ``tests/track/test_tracker.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax.config import IMAGENET_MEAN, IMAGENET_STD
from grm_jax.data.processing import normalize_image


def crop_geometry(state, factor: float):
    """(x1, y1, crop_sz) per box (B,4 x,y,w,h): crop_sz = ceil(sqrt(w·h)·factor); x1 = round(x + w/2 − crop_sz/2).

    Rounding is half to even (``jnp.round``), as Python's ``round`` in the official code. Computed in float32.
    """
    x, y, w, h = (state[..., i] for i in range(4))
    crop_sz = jnp.ceil(jnp.sqrt(w * h) * factor)
    x1 = jnp.round(x + 0.5 * w - 0.5 * crop_sz)
    y1 = jnp.round(y + 0.5 * h - 0.5 * crop_sz)
    return x1, y1, jnp.maximum(crop_sz, 1.0)


COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS: bilinear weights are 11-bit fixed point
COEF_SCALE = 1 << COEF_BITS


def _axis_taps(origin, crop_sz, out_size: int, limit: int):
    """Per output index (B, out): two source indices into the image, fixed-point weights, and validity.

    OpenCV INTER_LINEAR: f = float32((d + 0.5)·crop_sz/out − 0.5); s = floor(f); f −= s; s < 0 → (s, f) = (0, 0);
    s ≥ crop_sz − 1 → (s, f) = (crop_sz − 1, 0); weights round((1 − f)·2048), round(f·2048). Image index =
    origin + s; only indices 0 .. limit − 2 hold image pixels (the +1 quirk), the rest is black padding.
    """
    scale = 1.0 / (out_size / crop_sz[:, None])  # OpenCV: scale_x = 1 / inv_scale_x
    f = (jnp.arange(out_size, dtype=jnp.float32)[None] + 0.5) * scale - 0.5
    s = jnp.floor(f)
    f = f - s
    f = jnp.where(s < 0, 0.0, f)
    s = jnp.maximum(s, 0.0)
    last = crop_sz[:, None] - 1
    f = jnp.where(s >= last, 0.0, f)
    s = jnp.minimum(s, last)
    w1 = jnp.round(f * COEF_SCALE).astype(jnp.int32)
    w0 = jnp.round((1.0 - f) * COEF_SCALE).astype(jnp.int32)
    src0 = origin[:, None] + s
    src1 = origin[:, None] + jnp.minimum(s + 1, last)
    valid0 = (src0 >= 0) & (src0 <= limit - 2)
    valid1 = (src1 >= 0) & (src1 <= limit - 2)
    clip = lambda v: jnp.clip(v, 0, limit - 1).astype(jnp.int32)
    return clip(src0), clip(src1), w0, w1, valid0, valid1


def _gather(images, rows, cols, valid_r, valid_c):
    """images[b, rows[b, i], cols[b, j]] as int32, 0 where the row or column is padding."""
    b = jnp.arange(images.shape[0])[:, None, None]
    pixels = images[b, rows[:, :, None], cols[:, None, :]].astype(jnp.int32)
    return pixels * (valid_r[:, :, None] & valid_c[:, None, :])[..., None]


def _bilinear_fixed_point(images, rows, cols):
    """OpenCV's uint8 INTER_LINEAR: horizontal sums H = p0·a0 + p1·a1 (exact ints), then the vectorised vertical
    step out = (((H0 >> 4)·b0 >> 16) + ((H1 >> 4)·b1 >> 16) + 2) >> 2, saturated to 0..255."""
    r0, r1, b0, b1, vr0, vr1 = rows
    c0, c1, a0, a1, vc0, vc1 = cols
    a0, a1 = a0[:, None, :, None], a1[:, None, :, None]
    h0 = _gather(images, r0, c0, vr0, vc0) * a0 + _gather(images, r0, c1, vr0, vc1) * a1
    h1 = _gather(images, r1, c0, vr1, vc0) * a0 + _gather(images, r1, c1, vr1, vc1) * a1
    b0, b1 = b0[:, :, None, None], b1[:, :, None, None]
    out = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16)
    return jnp.clip((out + 2) >> 2, 0, 255)


def _area_half(images, x1, y1, out_size: int):
    """OpenCV switches INTER_LINEAR to INTER_AREA for an exact 2× downscale: (p00 + p01 + p10 + p11 + 2) >> 2."""
    height, width = images.shape[1:3]
    idx = 2 * jnp.arange(out_size, dtype=jnp.float32)[None]
    total = 0
    for dy in (0, 1):
        for dx in (0, 1):
            rows = y1[:, None] + idx + dy
            cols = x1[:, None] + idx + dx
            valid_r = (rows >= 0) & (rows <= height - 2)
            valid_c = (cols >= 0) & (cols <= width - 2)
            total = total + _gather(images, jnp.clip(rows, 0, height - 1).astype(jnp.int32),
                                    jnp.clip(cols, 0, width - 1).astype(jnp.int32), valid_r, valid_c)
    return (total + 2) >> 2


def sample_target(frames, state, factor: float, out_size: int):
    """Crops (B,out,out,3) float32 holding uint8 values, and resize factors out/crop_sz (B,).

    ``frames`` (B,H,W,3) uint8 (one frame size per batch), ``state`` (B,4) x,y,w,h pixels.
    """
    height, width = frames.shape[1:3]
    x1, y1, crop_sz = crop_geometry(state.astype(jnp.float32), factor)
    cols = _axis_taps(x1, crop_sz, out_size, width)
    rows = _axis_taps(y1, crop_sz, out_size, height)
    crops = _bilinear_fixed_point(frames, rows, cols)
    halved = crop_sz == 2 * out_size
    crops = jnp.where(halved[:, None, None, None], _area_half(frames, x1, y1, out_size), crops)
    same = crop_sz == out_size  # no resize at all: the padded window itself
    crops = jnp.where(same[:, None, None, None], _area_identity(frames, x1, y1, out_size), crops)
    return crops.astype(jnp.float32), out_size / crop_sz


def _area_identity(images, x1, y1, out_size: int):
    height, width = images.shape[1:3]
    idx = jnp.arange(out_size, dtype=jnp.float32)[None]
    rows, cols = y1[:, None] + idx, x1[:, None] + idx
    return _gather(images, jnp.clip(rows, 0, height - 1).astype(jnp.int32),
                   jnp.clip(cols, 0, width - 1).astype(jnp.int32),
                   (rows >= 0) & (rows <= height - 2), (cols >= 0) & (cols <= width - 2))


def normalize(crops):
    """(v/255 − mean)/std with ImageNet statistics, on (B,H,W,3) values in 0..255."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (crops / 255.0 - mean) / std


sample_target_jit = jax.jit(sample_target, static_argnums=(2, 3))


def normalize_table() -> np.ndarray:
    """(256, 3) float32: :func:`grm_jax.data.processing.normalize_image` of every grey level in every channel."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return normalize_image(levels[None])[0]


def normalize_exact(crops):
    """Crops (B,H,W,3) holding uint8 values → the host's normalisation, bit for bit, by table look-up.

    (XLA rewrites x/255 and /std as products with reciprocals, which differ from NumPy's divisions by an ulp;
    templates are normalised once per sequence, so they take the exact path.)
    """
    table = jnp.asarray(normalize_table())
    return table[crops.astype(jnp.int32), jnp.arange(3)]
