"""PyTorch-exact bicubic resizing of ViT position-embedding tables (GRM's ``finetune_track``,
docs/model.md#position-embeddings).

GRM builds its ViT for 224×224 images (a 14×14 patch grid), then derives ``pos_embed_z`` (template grid)
and ``pos_embed_x`` (search grid) from ``pos_embed`` with
``F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)`` (no antialias). This module
ports that kernel to NumPy so the tables can be re-derived from MAE weights without torch.

``jax.image.resize(..., "bicubic")`` is *not* the same operation: it uses the Keys kernel with
A = −0.5 and antialiases when down-sampling, whereas PyTorch uses A = −0.75, no antialias and
border-replicated taps.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TORCH_CUBIC_A", "cubic_kernel", "bicubic_weight_matrix", "bicubic_resize_torch", "resize_pos_embed",
           "derive_track_tables", "sincos_pos_embed"]

TORCH_CUBIC_A = -0.75  # PyTorch's cubic-convolution coefficient (upsample_bicubic2d)


def cubic_kernel(x, a: float = TORCH_CUBIC_A):
    """Cubic-convolution kernel W(x) (Keys 1981) with coefficient ``a``::

        W(x) = (a+2)|x|³ − (a+3)|x|² + 1           for |x| ≤ 1
        W(x) = a|x|³ − 5a|x|² + 8a|x| − 4a          for 1 < |x| < 2
        W(x) = 0                                    otherwise
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_weight_matrix(in_size: int, out_size: int, a: float = TORCH_CUBIC_A) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with ``resized = M @ signal`` along one axis, as PyTorch computes it.

    For output index i (``align_corners=False``, size given, so scale = in_size / out_size):

        s = (i + 0.5)·scale − 0.5                      (source coordinate, not clamped for cubic)
        j = min(⌊s⌋, in_size − 1),  t = clip(s − j, 0, 1)
        taps j−1, j, j+1, j+2 with weights W(t+1), W(t), W(1−t), W(2−t)
        each tap index clamped into [0, in_size − 1]   (edge replicate: clamped taps add up on the border)
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in={in_size} out={out_size}")
    scale = in_size / out_size
    m = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        s = (i + 0.5) * scale - 0.5
        j = min(math.floor(s), in_size - 1)
        t = min(max(s - j, 0.0), 1.0)
        weights = cubic_kernel(np.array([t + 1.0, t, 1.0 - t, 2.0 - t]), a)
        for k, w in enumerate(weights):
            m[i, min(max(j - 1 + k, 0), in_size - 1)] += w
    return m


def bicubic_resize_torch(grid, out_h: int, out_w: int, out_dtype=np.float64) -> np.ndarray:
    """``F.interpolate(mode='bicubic', align_corners=False, antialias=False)`` in NumPy float64.

    Layout is channels-last: ``grid`` is (H, W, C) (or (H, W), treated as one channel); the result is
    (out_h, out_w, C) (or (out_h, out_w)) cast to ``out_dtype`` (float64 by default; pass np.float32 to get
    a float32 table). Separable form: ``out[p, q, c] = Σ_h Σ_w Mh[p, h] · Mw[q, w] · grid[h, w, c]`` with
    ``Mh = bicubic_weight_matrix(H, out_h)``, ``Mw = bicubic_weight_matrix(W, out_w)``.

    PyTorch accumulates in the input precision (float32 for float32 tables); this port accumulates in
    float64, so against float32 PyTorch it agrees to float32 rounding (≈1e-7 relative).
    """
    grid = np.asarray(grid, dtype=np.float64)
    squeeze = grid.ndim == 2
    if squeeze:
        grid = grid[:, :, None]
    if grid.ndim != 3:
        raise ValueError(f"grid must be (H, W, C) or (H, W), got shape {grid.shape}")
    mh = bicubic_weight_matrix(grid.shape[0], out_h)
    mw = bicubic_weight_matrix(grid.shape[1], out_w)
    out = np.einsum("ph,hwc,qw->pqc", mh, grid, mw, optimize=True)
    if squeeze:
        out = out[:, :, 0]
    return out.astype(out_dtype)


def resize_pos_embed(pos_embed, grid_hw: tuple[int, int], out_hw: tuple[int, int],
                     patch_start_index: int = 1) -> np.ndarray:
    """GRM/OSTrack ``finetune_track`` on one table: (1, start + H·W, D) → (1, out_h·out_w, D) float32.

    Drops the first ``patch_start_index`` rows (1: the cls position; 2 for distilled DeiT), reshapes the
    rest row-major to the (H, W) grid (token = row·W + col), resizes with :func:`bicubic_resize_torch` and
    flattens row-major again. ``out_hw`` is (template_size/16,)·2 for ``pos_embed_z`` and
    (search_size/16,)·2 for ``pos_embed_x``.
    """
    pos_embed = np.asarray(pos_embed)
    h, w = (int(n) for n in grid_hw)
    out_h, out_w = (int(n) for n in out_hw)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != patch_start_index + h * w:
        raise ValueError(f"pos_embed must be (1, {patch_start_index} + {h}·{w}, D), got {pos_embed.shape}")
    dim = pos_embed.shape[2]
    grid = pos_embed[0, patch_start_index:, :].reshape(h, w, dim)
    resized = bicubic_resize_torch(grid, out_h, out_w, out_dtype=np.float32)
    return resized.reshape(1, out_h * out_w, dim)


def derive_track_tables(pos_embed, model_config, patch_start_index: int = 1) -> dict[str, np.ndarray]:
    """``pos_embed_z`` and ``pos_embed_x`` of ``finetune_track``: the square patch grid of ``pos_embed`` (its rows
    after the first ``patch_start_index``) resized by :func:`resize_pos_embed` to the template and search grids
    (``template_size`` / ``search_size`` over ``patch_size`` of ``model_config``)."""
    pos_embed = np.asarray(pos_embed, np.float32)
    grid = int(round((pos_embed.shape[1] - patch_start_index) ** 0.5))
    m = model_config
    return {name: resize_pos_embed(pos_embed, (grid, grid), (size // m.patch_size,) * 2, patch_start_index)
            for name, size in (("pos_embed_z", m.template_size), ("pos_embed_x", m.search_size))}


def sincos_pos_embed(dim: int, grid: int, extra_tokens: int = 1) -> np.ndarray:
    """The fixed 2-D sine-cosine table of MAE's ViTs (facebookresearch/mae ``util/pos_embed.py``), the ``pos_embed``
    every MAE checkpoint carries: (1, extra_tokens + grid², dim) float32, the extra (cls) rows 0.

    Token t = row·grid + col. The first dim/2 channels encode the column c, the last dim/2 the row r, each as
    [sin(p·ω_k), cos(p·ω_k)] over k = 0 … dim/4 − 1 with ω_k = 10000^(−k/(dim/4)), p = c or r.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine table needs an embedding dim divisible by 4, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def axis(position):
        angles = position.reshape(-1, 1) * omega
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    table = np.concatenate([axis(cols), axis(rows)], axis=1)
    table = np.concatenate([np.zeros((extra_tokens, dim)), table], axis=0)
    return table[None].astype(np.float32)
