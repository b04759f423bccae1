"""How a tracker divides its search tokens on a benchmark, and the trivial baselines its scores are read against.

:class:`DivisionStats` is an ``on_frame`` hook of :func:`grm_jax.evaluate.run.evaluate`: for every tracked frame it
takes each division layer's token decisions (1 = the token interacts with the template) and the ground-truth box
mapped into that frame's search crop (the crop is cut around the previous frame's box, as the tracker cut it:
:func:`grm_jax.data.processing.crop_window`), and counts, per layer, the interacting tokens inside and outside the
target. A division that means something lets the target's tokens interact more often than the background's.

:func:`keep_first_box` writes the results of the tracker that never moves (the first box on every frame).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from grm_jax.data.processing import crop_window
from grm_jax.evaluate import results


def token_centres(grid: int, search_size: int) -> np.ndarray:
    """(grid², 2) pixel centres (x, y) of the search tokens in the crop, row-major as the ViT orders them."""
    step = search_size / grid
    centre = (np.arange(grid) + 0.5) * step
    ys, xs = np.meshgrid(centre, centre, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def box_in_crop(box, previous, factor: float, search_size: int) -> np.ndarray:
    """``box`` (x, y, w, h px in the frame) in the search crop cut around ``previous``: (box − window origin)·r with
    r = search_size / crop_sz."""
    x1, y1, crop_sz = crop_window(previous, factor)
    scale = search_size / crop_sz
    x, y, w, h = (float(v) for v in box)
    return np.array([(x - x1) * scale, (y - y1) * scale, w * scale, h * scale])


def inside(centres: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Whether each (x, y) lies in the box (x, y, w, h)."""
    x, y, w, h = box
    return (centres[:, 0] >= x) & (centres[:, 0] < x + w) & (centres[:, 1] >= y) & (centres[:, 1] < y + h)


@dataclasses.dataclass
class DivisionStats:
    """Per division layer: tokens seen and interacting, inside and outside the ground-truth box (see module)."""

    search_factor: float
    search_size: int
    patch_size: int
    counts: np.ndarray | None = None  # (layers, 4): inside seen, inside interacting, outside seen, outside interacting
    previous: dict = dataclasses.field(default_factory=dict)

    def __call__(self, sequence, t: int, frame, box, outputs: dict) -> None:
        if t == 0 or "decisions" not in outputs:
            self.previous[sequence.name] = np.asarray(box, np.float64)
            return
        gt = np.asarray(sequence.gt[t], np.float64)
        prev = self.previous[sequence.name]
        self.previous[sequence.name] = np.asarray(box, np.float64)
        if not np.all(np.isfinite(gt)) or gt[2] <= 0 or gt[3] <= 0:
            return
        decisions = np.asarray(outputs["decisions"]).reshape(-1, (self.search_size // self.patch_size) ** 2)
        mask = inside(token_centres(self.search_size // self.patch_size, self.search_size),
                      box_in_crop(gt, prev, self.search_factor, self.search_size))
        counts = np.stack([np.full(len(decisions), mask.sum()), decisions[:, mask].sum(1),
                           np.full(len(decisions), (~mask).sum()), decisions[:, ~mask].sum(1)], axis=1)
        self.counts = counts if self.counts is None else self.counts + counts

    def summary(self) -> list[dict]:
        """Per division layer: the fraction of search tokens that interact, inside and outside the target, and
        inside / outside (``inf`` when only inside tokens interact, ``nan`` when none does)."""
        rows = []
        for layer, (n_in, i_in, n_out, i_out) in enumerate(self.counts if self.counts is not None else [], 1):
            rate_in = i_in / n_in if n_in else float("nan")
            rate_out = i_out / n_out if n_out else float("nan")
            ratio = rate_in / rate_out if rate_out else (float("inf") if rate_in else float("nan"))
            rows.append(dict(layer=layer, interact=(i_in + i_out) / (n_in + n_out), inside=rate_in,
                             outside=rate_out, ratio=ratio))
        return rows


def format_division(rows: list[dict]) -> str:
    lines = ["| division layer | tokens interacting | inside the target | outside | inside / outside |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {100 * r['interact']:.1f} % | {100 * r['inside']:.1f} % | "
                     f"{100 * r['outside']:.1f} % | {r['ratio']:.2f} |")
    return "\n".join(lines)


def keep_first_box(sequences, dataset: str, results_dir) -> None:
    """Result files of the tracker that reports the first box on every frame."""
    for seq in sequences:
        boxes = np.repeat(np.asarray(seq.gt[:1], np.float64), len(seq.frames), axis=0)
        results.write_results(results_dir, seq.name, dataset, boxes, np.zeros(len(boxes)))
