"""The model on training-style pairs: the training sampler's template/search crops, cut from a chosen split.

A tracker that scores worse than its training IoU suggests has three suspects: the model does not generalise from
the training sequences to held-out ones, the tracker's crops differ from the training crops, or errors compound
from frame to frame. The tracking modes of :mod:`grm_jax.evaluate.diagnose` separate the last; these rows separate
the first two. The same sampler as training (``grm_jax.data.pipeline.make_example``: causal frame pair, crop jitter,
brightness and flip augmentation) draws ``num_pairs`` pairs from the training split and from the held-out split;
``nominal`` rows repeat that with the search crop's centre and scale jitter off, so that the target sits at the
centre of the crop and fills a quarter of it, which is the crop a tracker cuts around a correct previous box.

Per row: mean IoU of the predicted box (decoded as in training: at the raw score map's maximum), median centre error
in search-crop pixels, median |log(predicted area / true area)| and its signed median (> 0: boxes too large), and
how much of the targets' shape the model measures: the least-squares slope of the predicted log aspect ratio
log(w/h) on the true one (1: measured; 0: one shape for every target).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from grm_jax.data.datasets import make_builder, synthetic_builder_config
from grm_jax.data.pipeline import make_example, settings_from_config
from grm_jax.data.source import DatasetSource

ROWS = (("train", False), ("train", True), ("val", False), ("val", True))  # (split, nominal crop)


def box_errors(pred_cxcywh: np.ndarray, anno_xywh: np.ndarray, crop_px: int) -> dict:
    """Per pair: IoU, centre distance (px), log(area_pred / area_true) and both log aspect ratios log(w/h)
    (``log_aspect_pred``, ``log_aspect_true``) for normalised boxes.

    ``pred_cxcywh``: (N, 4) predicted (cx, cy, w, h); ``anno_xywh``: (N, 4) true (x1, y1, w, h); both as fractions
    of the ``crop_px``-pixel search crop. IoU = |A ∩ B| / |A ∪ B|.
    """
    p = np.asarray(pred_cxcywh, np.float64)
    g = np.asarray(anno_xywh, np.float64)
    p_lo, p_hi = p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2
    g_lo, g_hi = g[:, :2], g[:, :2] + g[:, 2:]
    inter = np.prod(np.clip(np.minimum(p_hi, g_hi) - np.maximum(p_lo, g_lo), 0, None), axis=1)
    area_p, area_g = np.prod(p[:, 2:], axis=1), np.prod(g[:, 2:], axis=1)
    return dict(iou=inter / np.maximum(area_p + area_g - inter, 1e-12),
                centre_px=crop_px * np.linalg.norm(p[:, :2] - (g_lo + g_hi) / 2, axis=1),
                log_area=np.log(np.maximum(area_p, 1e-12) / area_g),
                log_aspect_pred=np.log(np.maximum(p[:, 2], 1e-12) / np.maximum(p[:, 3], 1e-12)),
                log_aspect_true=np.log(g[:, 2] / g[:, 3]))


def aspect_slope(log_aspect_pred: np.ndarray, log_aspect_true: np.ndarray) -> float:
    """Least-squares slope b of pred ≈ a + b·true: cov(true, pred) / var(true); NaN when every true aspect is
    the same."""
    t = log_aspect_true - np.mean(log_aspect_true)
    var = float(np.mean(t * t))
    return float(np.mean(t * (log_aspect_pred - np.mean(log_aspect_pred))) / var) if var > 0 else float("nan")


def nominal(settings):
    """``settings`` with the search crop's centre and scale jitter off (the crop around a correct box)."""
    return dataclasses.replace(settings, search=dataclasses.replace(settings.search, center_jitter=0.0,
                                                                    scale_jitter=0.0))


def pair_errors(predict, sources, settings, seed: int, num_pairs: int, batch_size: int = 16) -> dict:
    """:func:`box_errors` of ``num_pairs`` samples ``0 … num_pairs−1`` of the stream with seed ``seed``;
    ``predict(template, search, template_mask)`` → (B, 4) normalised (cx, cy, w, h)."""
    preds, annos = [], []
    for start in range(0, num_pairs, batch_size):
        samples = [make_example(sources, settings, seed, i) for i in range(start, min(start + batch_size,
                                                                                      num_pairs))]
        batch = {k: np.stack([s[k] for s in samples]) for k in ("template", "search", "template_mask",
                                                                "search_anno")}
        preds.append(np.asarray(predict(batch["template"], batch["search"], batch["template_mask"])))
        annos.append(batch["search_anno"])
    return box_errors(np.concatenate(preds), np.concatenate(annos), settings.search.size)


def pair_rows(config, model, variables, sources_by_split: dict, num_pairs: int = 256, seed: int = 1,
              threshold: float = 0.0) -> list[dict]:
    """One row per (split, nominal crop) of :data:`ROWS`; ``sources_by_split``: split → list of sources."""
    apply = jax.jit(lambda v, z, x, m: model.apply(v, z, x, m, train=False, threshold=threshold)["pred_boxes"])
    predict = lambda z, x, m: apply(variables, z, x, m)[:, 0]  # one compiled forward serves every row
    rows = []
    for split, at_nominal in ROWS:
        sources = sources_by_split[split]
        settings = settings_from_config(config, len(sources))
        errs = pair_errors(predict, sources, nominal(settings) if at_nominal else settings, seed, num_pairs)
        rows.append(dict(pairs=f"{split}, {'nominal crop' if at_nominal else 'training jitter'}",
                         iou=float(np.mean(errs["iou"])), centre_px=float(np.median(errs["centre_px"])),
                         size=float(np.median(np.abs(errs["log_area"]))),
                         size_signed=float(np.median(errs["log_area"])),
                         aspect_slope=aspect_slope(errs["log_aspect_pred"], errs["log_aspect_true"])))
    return rows


def synthetic_sources(config) -> dict:
    """split → [source] of the synthetic set ``config.data.synthetic`` (already prepared by its training run)."""
    builder = make_builder("synthetic_tracking", config.data.data_dir, config=synthetic_builder_config(config))
    return {split: [DatasetSource(builder.data_dir, split)] for split in ("train", "val")}


def format_pair_rows(rows: list[dict]) -> str:
    lines = ["| training-style pairs | mean IoU | median centre error px | median abs log area ratio | "
             "median log area ratio | aspect measured (slope) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['pairs']} | {r['iou']:.3f} | {r['centre_px']:.1f} | {r['size']:.2f} | "
              f"{r['size_signed']:+.2f} | {r['aspect_slope']:.2f} |" for r in rows]
    return "\n".join(lines)
