"""Cosine (Hann) windows applied to the score map at tracking time: the official ``lib/test/utils/hann.py``
``hann1d`` / ``hann2d`` (docs/tracking.md#hann-window).

Computed in float32 with NumPy in the same order as the official PyTorch code (the angle step 2π/(n+1) is a
Python float cast to float32, multiplied by a float32 index, then cos, 1 − ·, 0.5 · ·), so the windows agree with
the reference to within a float32 ulp of ``cos``.
"""

from __future__ import annotations

import math

import numpy as np


def hann1d(size: int, centered: bool = True) -> np.ndarray:
    """1-D Hann window of length ``size`` as float32.

    centered: w(k) = 0.5·(1 − cos(2π·k/(size + 1))), k = 1..size (no zero end points, peak in the middle).
    not centered: v(k) = 0.5·(1 + cos(2π·k/(size + 2))), k = 0..size//2, followed by v[1 : size − size//2]
    reversed (peak 1 at index 0, periodic layout).
    """
    if centered:
        k = np.arange(1, size + 1, dtype=np.float32)
        return (0.5 * (1 - np.cos(np.float32(2 * math.pi / (size + 1)) * k))).astype(np.float32)
    k = np.arange(0, size // 2 + 1, dtype=np.float32)
    half = (0.5 * (1 + np.cos(np.float32(2 * math.pi / (size + 2)) * k))).astype(np.float32)
    return np.concatenate([half, half[1 : size - size // 2][::-1]]).astype(np.float32)


def hann2d(size, centered: bool = True) -> np.ndarray:
    """2-D Hann window ``W[i, j] = w_rows(i)·w_cols(j)`` (outer product of :func:`hann1d`), float32.

    ``size`` is an int S (→ S×S) or a pair (rows, cols).
    """
    rows, cols = (size, size) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    return (hann1d(int(rows), centered)[:, None] * hann1d(int(cols), centered)[None, :]).astype(np.float32)
