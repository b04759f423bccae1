"""The official tracking procedure (``lib/test/tracker/grm.py`` ``GRM``; docs/tracking.md#procedure), compiled: one
XLA call per frame for a batch of sequences.

Per frame and sequence: search crop around the previous box → GRM forward at the dataset's threshold → centred
Hann window on the score map → decode (argmax on the windowed map, size and offset from the raw maps) → scale to
pixels → map back around the previous centre → clip with margin 10. The template is cropped once and never updated.

Two crop paths:

* ``host`` (default, exact): ``sample_target`` with OpenCV on the host, as the official code; the compiled call
  takes the crops.
* ``device``: the crop and its bilinear resize run inside the compiled call (:mod:`grm_jax.track.device_crop`), so
  a frame is one XLA call end to end; it differs from the host path by OpenCV's fixed-point rounding (measured in
  docs/tracking.md#device-crop).

:class:`BatchTracker` advances B slots together; :func:`track_sequences` keeps them filled from a list of sequences
of any lengths (a finished slot takes the next sequence), and :class:`Tracker` is the single-sequence view.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax.boxes import clip_box
from grm_jax.config import test_threshold
from grm_jax.data.processing import normalize_image, sample_target, transform_box_to_crop
from grm_jax.models.grm import inference_variables
from grm_jax.models.head import decode_boxes
from grm_jax.models.relation import template_box_mask
from grm_jax.track import device_crop
from grm_jax.track.window import hann2d


@dataclasses.dataclass(frozen=True)
class TrackerParams:
    """TEST.* values of a config (docs/tracking.md#procedure, docs/tracking.md#division-threshold)."""

    template_factor: float = 2.0
    template_size: int = 128
    search_factor: float = 4.0
    search_size: int = 256
    threshold: float = 0.0
    crop: str = "host"  # "host" (exact) or "device"
    hann_window: bool = True  # the official score penalty; False only to measure what it does (diagnostics)
    size_update: float = 1.0  # λ of :func:`update_size` (docs/tracking.md#size-update); 1 = the official tracker

    @classmethod
    def from_config(cls, config, dataset: str | None = None, crop: str = "host",
                    threshold: float | None = None) -> TrackerParams:
        """``threshold``: the division threshold if given, else ``dataset``'s TEST.HYPER value, else 0."""
        if threshold is None:
            threshold = test_threshold(config, dataset) if dataset else 0.0
        t = config.test
        return cls(template_factor=float(t.template_factor), template_size=int(t.template_size),
                   search_factor=float(t.search_factor), search_size=int(t.search_size),
                   threshold=float(threshold), crop=crop, size_update=float(t.get("size_update", 1.0)))


def map_box_back(pred_box: np.ndarray, state: np.ndarray, resize_factor: np.ndarray,
                 search_size: int) -> np.ndarray:
    """The official ``GRM.map_box_back`` (docs/tracking.md#map-back), float64, batched over rows.

    half = 0.5·search_size/rf; cx = cx_crop + (pcx − half); cy = cy_crop + (pcy − half); → (cx − w/2, cy − h/2, w, h)
    with (pcx, pcy) the previous box's centre. (QUIRK kept: ignores the crop origin's integer rounding.)
    """
    pred_box = np.asarray(pred_box, np.float64)
    state = np.asarray(state, np.float64)
    pcx = state[..., 0] + 0.5 * state[..., 2]
    pcy = state[..., 1] + 0.5 * state[..., 3]
    half = 0.5 * search_size / np.asarray(resize_factor, np.float64)
    cx, cy, w, h = (pred_box[..., i] for i in range(4))
    cx_real = cx + (pcx - half)
    cy_real = cy + (pcy - half)
    return np.stack([cx_real - 0.5 * w, cy_real - 0.5 * h, w, h], axis=-1)


def update_size(mapped: np.ndarray, state: np.ndarray, size_update: float) -> np.ndarray:
    """The predicted box with its size moved only λ of the way from the previous box's, centre kept:

    cx, cy from ``mapped``; w = w_prev + λ·(w_pred − w_prev), h likewise; (x, y) = (cx − w/2, cy − h/2).
    λ = 1 returns ``mapped`` itself (the official tracker); boxes (…, 4) as (x, y, w, h).
    """
    if size_update == 1.0:
        return mapped
    centre = mapped[..., :2] + 0.5 * mapped[..., 2:4]
    size = state[..., 2:4] + size_update * (mapped[..., 2:4] - state[..., 2:4])
    return np.concatenate([centre - 0.5 * size, size], axis=-1)


def crop_box_to_pixels(box: np.ndarray, search_size: int, resize_factor: np.ndarray) -> np.ndarray:
    """pred (normalised cx,cy,w,h) × search_size / rf, in float32 as the official torch expression computes it."""
    box = np.asarray(box, np.float32)
    rf = np.asarray(resize_factor, np.float32)[..., None]
    return (box * np.float32(search_size)) / rf


def make_network_step(model, window: np.ndarray, maps: bool = True) -> Callable:
    """Compiled ``(variables, z, x, template_mask, threshold) → (box, maps)``; box normalised (cx,cy,w,h).

    The box is decoded on the Hann-windowed score map (size/offset from the raw maps). ``threshold`` is traced.
    ``maps["decisions"]`` is each division layer's token choice, (L−1,B,Ns) int8, 1 = interacts with the template.
    ``maps=False``: ``maps`` is empty (nothing but the box leaves the device; what evaluation needs).
    """
    window = jnp.asarray(window)[None, :, :, None]

    def step(variables, z, x, template_mask, threshold):
        out = model.apply(variables, z, x, template_mask, threshold=threshold)
        box = decode_boxes(out["score_map"] * window, out["size_map"], out["offset_map"])
        if not maps:
            return box, {}
        return box, dict(score_map=out["score_map"], size_map=out["size_map"], offset_map=out["offset_map"],
                         interaction_ratio=out["interaction_ratio"],
                         decisions=jnp.argmax(out["decisions"], axis=-1).astype(jnp.int8))

    return jax.jit(step)


def template_crop_box(boxes, resize_factor, template_size: int):
    """:func:`grm_jax.data.processing.transform_box_to_crop` of a box in its own crop, float32, batched:
    ((out − 1)/2 − wh·rf/2, wh·rf)/out (normalised x, y, w, h)."""
    wh = boxes[:, 2:4] * resize_factor[:, None]
    centre = jnp.float32((template_size - 1) / 2)
    return jnp.concatenate([centre - 0.5 * wh, wh], axis=-1) / template_size


def device_template_fn(model, template_factor: float, template_size: int) -> Callable:
    """The device-crop initialisation, ``(frames (B,H,W,3) uint8, boxes (B,4) float32) → (z, template_mask)``:
    template crop on the device, normalised exactly as on the host, and its box mask (docs/model.md#template-box-mask).
    Shared by :class:`BatchTracker` (``crop='device'``) and :mod:`grm_jax.export`, like :func:`device_track_fn`."""
    grid = template_size // model.config.patch_size

    def prepare(frames, boxes):
        crops, rf = device_crop.sample_target(frames, boxes, template_factor, template_size)
        mask = template_box_mask(template_crop_box(boxes, rf, template_size), grid)
        return device_crop.normalize_exact(crops), mask

    return prepare


def device_track_fn(model, window: np.ndarray, search_factor: float, search_size: int,
                    maps: bool = True) -> Callable:
    """The device-crop tracker step, ``(variables, z, template_mask, frames, state, threshold) → outputs``.

    ``frames`` (B,H,W,3) uint8, ``state`` (B,4) float32 previous boxes x,y,w,h px. Crops around ``state`` on the
    device, runs :func:`make_network_step` and returns its maps plus ``crop_box`` (normalised cx,cy,w,h),
    ``pixels`` = crop_box·S/rf in float32 (as :func:`crop_box_to_pixels`), ``resize_factor`` (B,) and
    ``search_crop`` (B,S,S,3) uint8; the host then maps back and clips in float64.

    One function for both users: :class:`BatchTracker` (``crop='device'``) jits it and :mod:`grm_jax.export`
    exports it, so the two run the same program and give the same boxes, bit for bit (XLA compiles a different
    set of outputs into different fusions, whose float32 sums round differently).
    ``maps=False``: only ``crop_box``, ``pixels`` and ``resize_factor`` (see :func:`make_network_step`).
    """
    network = make_network_step(model, window, maps)

    def step(variables, z, template_mask, frames, state, threshold):
        crops, rf = device_crop.sample_target(frames, state, search_factor, search_size)
        box, out = network(variables, z, device_crop.normalize(crops), template_mask, threshold)
        pixels = (box * jnp.float32(search_size)) / rf[:, None]
        out = dict(out, crop_box=box, pixels=pixels, resize_factor=rf)
        return dict(out, search_crop=crops.astype(jnp.uint8)) if maps else out

    return step


@dataclasses.dataclass
class Slot:
    """One sequence being tracked in a batch slot."""

    index: int  # position in the caller's list of sequences
    frames: Sequence  # frame images (H,W,3) uint8 RGB, or paths, or a callable loader per frame
    frame: int  # next frame to track
    boxes: list
    times: list


class BatchTracker:
    """B sequences tracked together: one compiled forward per frame for the whole batch.

    ``maps=False``: :meth:`track` returns the boxes and no per-frame maps (score maps, decisions, crops), so that
    nothing else crosses from the device each frame; evaluation without visualisation runs this way.
    """

    def __init__(self, model, variables, params: TrackerParams, batch_size: int = 1, maps: bool = True):
        # Lower-precision models: kernels cast once here instead of in every call (bit-identical outputs); the
        # variables, and the templates between initialisations, stay on the device.
        variables = jax.device_put(inference_variables(variables, model.config.dtype))
        self.model, self.variables, self.params, self.batch_size = model, variables, params, batch_size
        self.maps = maps
        p = params
        if p.template_size != model.config.template_size or p.search_size != model.config.search_size:
            raise ValueError(f"tracker crop sizes {p.template_size}/{p.search_size} do not match the model's "
                             f"{model.config.template_size}/{model.config.search_size}")
        if p.crop not in ("host", "device"):
            raise ValueError(f"crop = {p.crop!r} is not 'host' or 'device'")
        grid = p.search_size // model.config.patch_size
        window = hann2d(grid) if p.hann_window else np.ones((grid, grid), np.float32)
        self.network = make_network_step(model, window, maps)
        self.device_step = self.device_template = None
        if p.crop == "device":
            self.device_step = jax.jit(device_track_fn(model, window, p.search_factor, p.search_size, maps))
            self.device_template = jax.jit(device_template_fn(model, p.template_factor, p.template_size))
        self.threshold = jnp.float32(p.threshold)
        grid = p.template_size // model.config.patch_size
        self.z = np.zeros((batch_size, p.template_size, p.template_size, 3), np.float32)
        self.template_mask = np.zeros((batch_size, grid * grid), np.float32)
        self.state = np.zeros((batch_size, 4), np.float64)
        self._template_on_device = None  # (z, template_mask) on the device; None after an initialize

    def initialize(self, slot: int, frame: np.ndarray, box) -> None:
        """Template crop of ``frame`` around ``box`` (x,y,w,h px) into ``slot``; the state becomes ``box``.
        ``crop='device'`` crops on the device too (identical to the host crop when it shrinks the image, within
        one grey level on ≤ 0.5 % of the pixels when it enlarges it; tests/track/test_tracker.py)."""
        p = self.params
        box = np.asarray(box, np.float64)
        if self.device_template is not None:
            z, mask = self.device_template(np.asarray(frame)[None], box[None].astype(np.float32))
            self.z[slot], self.template_mask[slot] = np.asarray(z)[0], np.asarray(mask)[0]
        else:
            crop, rf, _ = sample_target(frame, box, p.template_factor, p.template_size)
            self.z[slot] = normalize_image(crop)
            crop_box = transform_box_to_crop(box, box, rf, p.template_size)
            grid = p.template_size // self.model.config.patch_size
            self.template_mask[slot] = np.asarray(template_box_mask(crop_box[None], grid))[0]
        self.state[slot] = box
        self._template_on_device = None

    def _template(self):
        """The templates and their masks on the device, copied there once per initialisation."""
        if self._template_on_device is None:
            self._template_on_device = jax.device_put((self.z, self.template_mask))
        return self._template_on_device

    def track(self, frames: Sequence[np.ndarray | None]) -> tuple[np.ndarray, dict]:
        """Advance every slot whose frame is given (None: idle slot, state kept). Returns (B,4) boxes and the
        per-slot network outputs, each with the slot first: the search crops' maps, ``interaction_ratio``
        (B,L−1), ``decisions`` (B,L−1,Ns) int8 (1 = interacts), ``search_crop`` (B,S,S,3) uint8 (zeros for an
        idle slot), ``crop_box`` (B,4) normalised (cx,cy,w,h) in the crop, ``resize_factor``, ``active``."""
        p = self.params
        active = np.array([f is not None for f in frames])
        if self.device_step is not None:
            shape = next(f.shape for f in frames if f is not None)
            batch = np.stack([f if f is not None and f.shape == shape else np.zeros(shape, np.uint8)
                              for f in frames])
            if any(f is not None and f.shape != shape for f in frames):
                raise ValueError("device crop needs frames of one size per batch; use crop='host'")
            maps = jax.device_get(self.device_step(self.variables, *self._template(), batch,
                                                   self.state.astype(np.float32), self.threshold))
            box, pixels = maps.pop("crop_box"), maps.pop("pixels")
            rf = maps.pop("resize_factor").astype(np.float64)
        else:
            x = np.zeros((self.batch_size, p.search_size, p.search_size, 3), np.float32)
            rf = np.ones(self.batch_size, np.float64)
            crops = [None] * self.batch_size
            for i, frame in enumerate(frames):
                if frame is not None:
                    crops[i], rf[i], _ = sample_target(frame, self.state[i], p.search_factor, p.search_size)
                    x[i] = normalize_image(crops[i])
            z, template_mask = self._template()
            box, maps = jax.device_get(self.network(self.variables, z, x, template_mask, self.threshold))
            if self.maps:
                maps = dict(maps, search_crop=np.stack([c if c is not None else np.zeros(x.shape[1:], np.uint8)
                                                        for c in crops]))
            pixels = crop_box_to_pixels(box, p.search_size, rf)
        mapped = update_size(map_box_back(pixels, self.state, rf, p.search_size), self.state, p.size_update)
        for i, frame in enumerate(frames):
            if frame is not None:
                height, width = frame.shape[:2]
                self.state[i] = clip_box(mapped[i], height, width, margin=10)
        maps = {k: np.asarray(v) for k, v in maps.items()}
        if "decisions" in maps:
            maps["decisions"] = np.moveaxis(maps["decisions"], 0, 1)  # slot first, like every other output
        maps["crop_box"] = np.asarray(box)
        maps["resize_factor"] = rf
        maps["active"] = active
        return self.state.copy(), maps


class Tracker:
    """Single-sequence tracker: ``initialize(frame, box)`` then ``track(frame) -> box`` (x,y,w,h px)."""

    def __init__(self, model, variables, params: TrackerParams):
        self.batch = BatchTracker(model, variables, params, batch_size=1)
        self.last_outputs: dict = {}

    def initialize(self, frame: np.ndarray, box) -> None:
        self.batch.initialize(0, frame, box)

    def track(self, frame: np.ndarray) -> np.ndarray:
        boxes, outputs = self.batch.track([frame])
        self.last_outputs = {k: v[0] for k, v in outputs.items()}
        return boxes[0]


@dataclasses.dataclass
class SequenceResult:
    boxes: np.ndarray  # (N,4) x,y,w,h px; row 0 is the initial box
    times: np.ndarray  # (N,) seconds per frame (frame 0: the initialisation)


def track_sequences(tracker: BatchTracker, sequences: Iterable[tuple[Sequence, Any]],
                    read_frame: Callable[[Any], np.ndarray] = lambda f: f,
                    on_done: Callable[[int, SequenceResult], None] | None = None,
                    on_frame: Callable[[int, int, np.ndarray, np.ndarray, dict], None] | None = None
                    ) -> list[SequenceResult]:
    """Track every ``(frames, init_box)`` of ``sequences`` with ``tracker``'s B slots kept busy.

    ``frames`` is a sequence of images or of whatever ``read_frame`` turns into an (H,W,3) uint8 RGB image.
    A finished sequence frees its slot for the next one; idle slots are skipped in the batch (their rows are
    computed on zeros and dropped). ``on_done(index, result)`` is called as each sequence finishes;
    ``on_frame(index, t, frame, box, outputs)`` after each frame t (t = 0: the initial box, ``outputs`` empty;
    else the slot's row of :meth:`BatchTracker.track`'s outputs).
    Per-frame time is the batch step's wall time (shared by the slots it served).
    """
    pending = list(enumerate(sequences))[::-1]
    results: dict[int, SequenceResult] = {}
    slots: list[Slot | None] = [None] * tracker.batch_size

    def fill(i: int) -> None:
        while pending:
            index, (frames, init_box) = pending.pop()
            start = time.perf_counter()
            first = read_frame(frames[0])
            tracker.initialize(i, first, init_box)
            slot = Slot(index, frames, 1, [np.asarray(init_box, np.float64)], [time.perf_counter() - start])
            if on_frame is not None:
                on_frame(index, 0, first, slot.boxes[0], {})
            if len(frames) > 1:
                slots[i] = slot
                return
            finish(slot)
        slots[i] = None

    def finish(slot: Slot) -> None:
        result = SequenceResult(np.stack(slot.boxes), np.asarray(slot.times))
        results[slot.index] = result
        if on_done is not None:
            on_done(slot.index, result)

    for i in range(tracker.batch_size):
        fill(i)
    while any(slots):
        frames = [read_frame(s.frames[s.frame]) if s is not None else None for s in slots]
        start = time.perf_counter()
        boxes, outputs = tracker.track(frames)
        elapsed = time.perf_counter() - start
        for i, slot in enumerate(slots):
            if slot is None:
                continue
            slot.boxes.append(boxes[i].copy())
            slot.times.append(elapsed)
            if on_frame is not None:
                on_frame(slot.index, slot.frame, frames[i], slot.boxes[-1], {k: v[i] for k, v in outputs.items()})
            slot.frame += 1
            if slot.frame == len(slot.frames):
                finish(slot)
                fill(i)
    return [results[i] for i in sorted(results)]
