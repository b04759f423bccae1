"""Run an exported GRM tracker (:mod:`grm_jax.export`) with nothing but jax, numpy and the standard library.

This file is copied into every artefact folder; use it from there::

    import sys; sys.path.insert(0, "ARTEFACT_DIR")
    from export_runtime import ExportedTracker
    tracker = ExportedTracker("ARTEFACT_DIR")
    tracker.initialize(first_frame_rgb_uint8, (x, y, w, h))
    box = tracker.track(next_frame_rgb_uint8)              # (x, y, w, h) float64, pixels

Batched: ``initialize_batch(frames (B,H,W,3), boxes (B,4))`` then ``track_batch(frames) → (B,4)``; the B
sequences advance together (one frame size per batch). Frames are RGB uint8. The programs run on the default
device (CPU or CUDA GPU, whichever jax finds and the artefact was exported for).
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
from jax import export


def map_box_back(pixels, state, resize_factor, search_size: int) -> np.ndarray:
    """The official map-back in float64: half = 0.5·S/rf; centre += previous centre − half; → (x, y, w, h)."""
    pixels, state = np.asarray(pixels, np.float64), np.asarray(state, np.float64)
    half = 0.5 * search_size / np.asarray(resize_factor, np.float64)
    cx = pixels[:, 0] + (state[:, 0] + 0.5 * state[:, 2] - half)
    cy = pixels[:, 1] + (state[:, 1] + 0.5 * state[:, 3] - half)
    return np.stack([cx - 0.5 * pixels[:, 2], cy - 0.5 * pixels[:, 3], pixels[:, 2], pixels[:, 3]], axis=-1)


def clip_box(box, height: int, width: int, margin: int = 10) -> np.ndarray:
    """The official clip (x2/y2 from the unclipped x1/y1), float64, batched."""
    x, y, w, h = (box[:, i] for i in range(4))
    x1 = np.minimum(np.maximum(0, x), width - margin)
    x2 = np.minimum(np.maximum(margin, x + w), width)
    y1 = np.minimum(np.maximum(0, y), height - margin)
    y2 = np.minimum(np.maximum(margin, y + h), height)
    return np.stack([x1, y1, np.maximum(margin, x2 - x1), np.maximum(margin, y2 - y1)], axis=-1)


def nest(flat: dict) -> dict:
    """{'params/a/b': array} → {'params': {'a': {'b': array}}}."""
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


class ExportedTracker:
    """The tracker of an artefact folder: ``initialize`` / ``track`` for one sequence, ``*_batch`` for several.

    ``threshold``: division threshold (default: the one recorded at export time, ``meta['threshold']``).
    """

    def __init__(self, path, threshold: float | None = None):
        path = pathlib.Path(path)
        self.meta = json.loads((path / "meta.json").read_text())
        self._prepare = export.deserialize(bytearray((path / "prepare.jax").read_bytes()))
        self._track = export.deserialize(bytearray((path / "track.jax").read_bytes()))
        with np.load(path / "variables.npz") as data:
            self.variables = jax.device_put(nest({k: data[k] for k in data.files}))
        self.threshold = np.float32(self.meta["threshold"] if threshold is None else threshold)
        self._prepare_call = jax.jit(self._prepare.call)
        self._track_call = jax.jit(self._track.call)
        self.z = self.template_mask = self.state = None
        self.last_outputs: dict = {}

    def initialize_batch(self, frames, boxes) -> None:
        """Template crops of ``frames`` (B,H,W,3) uint8 around ``boxes`` (B,4) x,y,w,h px; states ← boxes."""
        frames = np.asarray(frames, np.uint8)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if frames.ndim != 4 or frames.shape[0] != boxes.shape[0]:
            raise ValueError(f"frames {frames.shape} and boxes {boxes.shape} do not make a batch")
        self.z, self.template_mask = self._prepare_call(frames, boxes)
        self.state = np.asarray(boxes, np.float64)

    def track_batch(self, frames) -> np.ndarray:
        """One step for every sequence: ``frames`` (B,H,W,3) uint8 → boxes (B,4) float64 x,y,w,h px.

        ``last_outputs`` keeps the step's outputs as NumPy, the sequence first: ``score_map`` (B,S,S),
        ``size_map``, ``offset_map``, ``interaction_ratio`` (B,L−1), ``decisions`` (B,L−1,Ns) int8 (1 = the
        token interacts with the template), ``search_crop`` (B,S,S,3) uint8, ``crop_box`` (B,4) normalised
        cx,cy,w,h in the crop, ``pixels`` (the same × S/rf), ``resize_factor`` (B,).
        """
        if self.state is None:
            raise RuntimeError("call initialize / initialize_batch first")
        frames = np.asarray(frames, np.uint8)
        if frames.shape[0] != self.state.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames for {self.state.shape[0]} initialised sequences")
        out = {k: np.asarray(v) for k, v in self._track_call(
            self.variables, self.z, self.template_mask, frames, self.state.astype(np.float32),
            self.threshold).items()}
        out["score_map"] = out["score_map"][..., 0]
        out["decisions"] = np.moveaxis(out["decisions"], 0, 1)
        self.last_outputs = out
        # Map back and clip in float64 on the host, exactly as the Python tracker.
        mapped = map_box_back(out["pixels"], self.state, out["resize_factor"], self.meta["search_size"])
        self.state = clip_box(mapped, frames.shape[1], frames.shape[2])
        return self.state.copy()

    def initialize(self, frame, box) -> None:
        """Single sequence: template crop of ``frame`` (H,W,3) uint8 around ``box`` (x,y,w,h px)."""
        self.initialize_batch(np.asarray(frame)[None], np.asarray(box, np.float32)[None])

    def track(self, frame) -> np.ndarray:
        """Single sequence: the box (x,y,w,h px, float64) in ``frame`` (H,W,3) uint8."""
        return self.track_batch(np.asarray(frame)[None])[0]
