"""Template/search pair sampling, the official ``TrackingSampler`` in ``causal`` mode (docs/training.md#pair-sampling).

One draw (every random choice from the ``np.random.Generator`` passed in, so a draw is a pure function of the
generator's seed):

1. dataset d with probability ratios[d] / Σ ratios;
2. a sequence uniformly; for a video dataset redrawn until it has > 4 visible frames and length ≥ 20
   (official: > 2·(num_template + num_search) visible frames with one of each); an image dataset takes any;
3. video: the template ("base") frame uniformly among the visible frames in [0, len − 1); the search frame
   uniformly among the visible frames in [base + 1, base + max_interval + gap_inc) (capped at len); when there is
   none, gap_inc += 5 and a new base frame is drawn. Image dataset: template = search = frame 0.

Whether the pair is then usable (readable images, a valid crop) is decided later; the caller redraws with a fresh
generator, as ``TrackingSampler.getitem`` redraws after any exception (docs/training.md#pair-sampling, step 4).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MIN_VISIBLE = 4  # > 2·(num_template + num_search) = 2·(1 + 1) visible frames
MIN_LENGTH = 20
GAP_INCREASE = 5


class PairIndex(NamedTuple):
    dataset: int
    sequence: int
    template_frame: int
    search_frame: int


def choose_dataset(rng: np.random.Generator, ratios) -> int:
    """d with probability ratios[d] / Σ ratios (Python's ``random.choices`` in the official code)."""
    p = np.asarray(ratios, np.float64)
    if p.ndim != 1 or len(p) == 0 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"dataset ratios must be non-negative with a positive sum, got {ratios!r}")
    return int(rng.choice(len(p), p=p / p.sum()))


def sample_visible(rng: np.random.Generator, visible: np.ndarray, lo: int, hi: int) -> int | None:
    """Uniform choice among t in [max(lo, 0), min(hi, len)) with visible[t]; None when there is none.

    (``_sample_visible_ids`` with num_ids = 1.)
    """
    lo, hi = max(int(lo), 0), min(int(hi), len(visible))
    if hi <= lo:
        return None
    candidates = np.flatnonzero(visible[lo:hi])
    if len(candidates) == 0:
        return None
    return lo + int(candidates[rng.integers(len(candidates))])


def sequence_is_usable(info) -> bool:
    """Video sequences: > 4 visible frames and length ≥ 20."""
    return int(np.count_nonzero(info.visible)) > MIN_VISIBLE and info.length >= MIN_LENGTH


def choose_sequence(rng: np.random.Generator, source, max_tries: int = 100_000) -> int:
    """A sequence index, uniform; video sources redraw until ``sequence_is_usable``."""
    n = source.num_sequences
    if n == 0:
        raise ValueError(f"source {source.name} has no sequences")
    for _ in range(max_tries):
        i = int(rng.integers(n))
        if not source.is_video or sequence_is_usable(source.sequence_info(i)):
            return i
    raise ValueError(f"source {source.name}: no sequence with > {MIN_VISIBLE} visible frames and length >= "
                     f"{MIN_LENGTH} found in {max_tries} draws")


def causal_frames(rng: np.random.Generator, visible: np.ndarray, max_interval: int) -> tuple[int, int]:
    """(template, search) frame indices of one video sequence, causal mode (module docstring, step 3)."""
    visible = np.asarray(visible, bool)
    n = len(visible)
    shown = np.flatnonzero(visible)
    if len(shown) < 2:  # no (earlier, later) pair of visible frames: the official loop would never end
        raise ValueError("causal sampling needs two visible frames")
    gap_inc = 0
    while True:
        base = sample_visible(rng, visible, 0, n - 1)
        if base is None:
            raise ValueError("no visible frame in [0, len - 1)")
        search = sample_visible(rng, visible, base + 1, base + max_interval + gap_inc)
        if search is not None:
            return base, search
        gap_inc += GAP_INCREASE


def sample_pair(rng: np.random.Generator, sources, ratios, max_interval: int) -> PairIndex:
    """One draw of (dataset, sequence, template frame, search frame), steps 1–3 of the module docstring."""
    d = choose_dataset(rng, ratios)
    source = sources[d]
    i = choose_sequence(rng, source)
    if not source.is_video:
        return PairIndex(d, i, 0, 0)
    template, search = causal_frames(rng, source.sequence_info(i).visible, max_interval)
    return PairIndex(d, i, template, search)
