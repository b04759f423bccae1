"""How prepared datasets are stored, shared by the writers (:mod:`grm_jax.data.datasets`) and the readers
(:mod:`grm_jax.data.source`): frame encoding and the names of the files beside the records.

A leaf module (nothing of grm_jax imported), so that both sides import it without importing each other.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Per-split sequence index written beside the frame records (``np.savez``: names, first, length, visible, ...).
INDEX_FILE = "sequences_{split}.npz"
#: What preparation could not read (missing or unreadable frames, bad boxes), written beside the records.
REPORT_FILE = "preparation_report.txt"


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 image (OpenCV encodes BGR, so the channels are swapped first)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
