"""Tracking overlay videos: each frame with the predicted box, the ground-truth box, the IoU and a small bar chart
of the per-layer interaction ratio (share of search tokens that interact with the template) in the top-right
corner. :class:`VideoWriter` writes MPEG-4 (``mp4v``) files with OpenCV; :class:`OverlayRecorder` is the per-frame
hook ``eval.py --vis_dir`` passes to :func:`grm_jax.evaluate.run.evaluate` (overlay video per sequence plus the
token grids of :mod:`grm_jax.viz.tokens` every N frames).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Collection

import cv2
import numpy as np

from grm_jax.files import default_mode
from grm_jax.viz.tokens import draw_box, save_png, tracker_token_grid

PRED_COLOUR = (0, 255, 0)  # green: the tracker's box
GT_COLOUR = (255, 40, 40)  # red: the ground truth
BAR_COLOUR = (255, 140, 0)  # the token tint of the grids: share of interacting tokens
CHART_SIZE = (64, 120)  # default (h, w) px of the interaction-ratio chart


def box_iou_xywh(a, b) -> float:
    """IoU of two (x, y, w, h) boxes; NaN when either is missing, non-finite or empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or min(a[2], a[3], b[2], b[3]) <= 0:
        return float("nan")
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def ratio_chart(ratios, size: tuple[int, int] = CHART_SIZE) -> np.ndarray:
    """(h, w) uint8 RGB bar chart on a dark background: one bar per division layer (left = block 1) rising from
    row ``base = h − 14`` by ratio · (base − 2) px; a grey line at ratio 1 (row 2); the title 'interact' below."""
    h, w = size
    chart = np.full((h, w, 3), 20, np.uint8)
    ratios = np.clip(np.asarray(ratios, np.float64).ravel(), 0, 1)
    base, top = h - 14, 2
    chart[top, :] = 90
    if ratios.size:
        width = (w - 4) / ratios.size
        for i, r in enumerate(ratios):
            x0, x1 = int(round(2 + i * width + 1)), int(round(2 + (i + 1) * width - 1))
            bar = int(round(r * (base - top)))
            if bar > 0 and x1 > x0:
                chart[base - bar:base, x0:x1] = BAR_COLOUR
    cv2.putText(chart, "interact", (3, h - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (220, 220, 220), 1, cv2.LINE_AA)
    return chart


def chart_size(frame_shape) -> tuple[int, int]:
    """(h, w) of the chart on a frame: a quarter of the frame width, 64 to 240 px wide, h = max(40, w/2)."""
    w = int(np.clip(frame_shape[1] // 4, 64, 240))
    return max(40, w // 2), w


def paste_top_right(image: np.ndarray, panel: np.ndarray, margin: int = 4) -> np.ndarray:
    """Copy of ``image`` with ``panel`` pasted ``margin`` px from its top-right corner (cropped to fit)."""
    out = image.copy()
    h = min(panel.shape[0], out.shape[0] - margin)
    w = min(panel.shape[1], out.shape[1] - margin)
    if h > 0 and w > 0:
        x = out.shape[1] - margin - w
        out[margin:margin + h, x:x + w] = panel[:h, panel.shape[1] - w:]
    return out


def overlay_frame(frame: np.ndarray, box=None, gt=None, ratios=None, label: str = "") -> np.ndarray:
    """The frame with the interaction-ratio chart top-right (if ``ratios``; :func:`chart_size`), then the GT box
    (red), the predicted box (green) and a text line '``label`` IoU x.xx' top-left (IoU only when both boxes are
    given and valid)."""
    out = np.ascontiguousarray(frame, np.uint8)
    if ratios is not None and np.size(ratios):
        out = paste_top_right(out, ratio_chart(ratios, chart_size(out.shape)))
    if gt is not None:
        out = draw_box(out, gt, GT_COLOUR)
    if box is not None:
        out = draw_box(out, box, PRED_COLOUR)
    text = label
    if box is not None and gt is not None and np.isfinite(iou := box_iou_xywh(box, gt)):
        text = f"{text}  IoU {iou:.2f}".strip()
    if text:
        cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class VideoWriter:
    """MPEG-4 (``mp4v``) writer of RGB uint8 frames; the size is taken from the first frame (odd sizes are padded
    by a black row/column: the codec needs even sizes). Use as a context manager or call :meth:`close`.

    Frames go to a hidden temporary file next to ``path`` (``.<name>.partial<suffix>``), which replaces ``path``
    when the writer is closed normally (with the umask's mode): an existing ``path`` is untouched until then, and a
    run that fails (the context exits with an exception, or :meth:`abort`) deletes the temporary file."""

    def __init__(self, path, fps: float = 30.0):
        self.path, self.fps = pathlib.Path(path), float(fps) if fps and fps > 0 else 30.0
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.writer, self.size, self.count = None, None, 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, np.uint8)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self.size = (w + w % 2, h + h % 2)
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"OpenCV cannot open {self.path} for writing (mp4v)")
        w, h = self.size
        if frame.shape[:2] != (h, w):
            frame = cv2.copyMakeBorder(frame, 0, max(0, h - frame.shape[0]), 0, max(0, w - frame.shape[1]),
                                       cv2.BORDER_CONSTANT)[:h, :w]
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self) -> None:
        """Finish the file and move it onto ``path``."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.chmod(self.partial, default_mode())
            os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Drop what was written; ``path`` stays as it was."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.partial.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class OverlayRecorder:
    """Per-frame hook for :func:`grm_jax.evaluate.run.evaluate`: for each chosen sequence writes
    ``out_dir/<name>.mp4`` (every frame, :func:`overlay_frame`) and ``out_dir/<name>/tokens_<t>.png``
    (:func:`grm_jax.viz.tokens.tracker_token_grid`) every ``every`` frames (t = every, 2·every, …).

    Call it as ``recorder(sequence, t, frame, box, outputs)`` (``sequence`` has ``name``, ``frames`` and ``gt``);
    the video is closed after the sequence's last frame. ``sequences``: names to record (None: all).
    """

    def __init__(self, out_dir, patch_size: int, sequences: Collection[str] | None = None, every: int = 10,
                 fps: float = 30.0):
        self.out_dir, self.patch_size, self.every, self.fps = pathlib.Path(out_dir), patch_size, every, fps
        self.sequences = None if sequences is None else set(sequences)
        self.writers: dict[str, VideoWriter] = {}
        self.written: list[pathlib.Path] = []

    def wants(self, name: str) -> bool:
        return self.sequences is None or name in self.sequences

    def frame(self, name: str, t: int, frame: np.ndarray, box, outputs: dict, gt=None) -> None:
        """Record frame ``t`` of sequence ``name`` (tracked ``box``, the tracker's ``outputs`` row, optional GT)."""
        if name not in self.writers:
            self.writers[name] = VideoWriter(self.out_dir / f"{name}.mp4", self.fps)
        self.writers[name].write(overlay_frame(frame, box, gt, outputs.get("interaction_ratio"), f"#{t}"))
        if t > 0 and self.every > 0 and t % self.every == 0 and "decisions" in outputs:
            path = self.out_dir / name / f"tokens_{t:05d}.png"
            self.written.append(save_png(path, tracker_token_grid(outputs, self.patch_size)))

    def finish(self, name: str) -> None:
        writer = self.writers.pop(name, None)
        if writer is not None:
            writer.close()
            self.written.append(writer.path)

    def __call__(self, sequence, t: int, frame: np.ndarray, box, outputs: dict) -> None:
        if not self.wants(sequence.name):
            return
        gt = sequence.gt[t] if sequence.gt is not None and t < len(sequence.gt) else None
        self.frame(sequence.name, t, frame, box, outputs, gt)
        if t == len(sequence.frames) - 1:
            self.finish(sequence.name)

    def close(self) -> None:
        for name in list(self.writers):
            self.finish(name)
