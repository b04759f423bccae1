"""Why a tracker scores what it scores: the same model tracked in several modes on the same sequences.

    python -m grm_jax.evaluate.diagnose --workdir runs/demo      # the demo's model on its held-out sequences

Modes: ``free-running`` (the tracker as evaluated: each search crop is cut around its own previous box);
``re-centred`` (each crop is cut around the previous frame's ground truth, so a frame's error cannot carry into the
next); each with and without the Hann window;
and two trackers without a model: the previous frame's ground truth, and the first box kept. Per mode: AUC, the
median centre error in pixels, the median size error |log(predicted area / true area)| (0.69 = a factor of 2) and
its signed median (> 0: boxes too large), over the frames where the target is visible. The gap between re-centred
and free-running is drift; between re-centred and the previous ground truth, the model's own localisation error.

Scale response (``re-centred, crop ×s``): each crop is cut around the previous ground truth scaled by ``s`` about
its centre, so the target fills 1/s of its usual share of the crop. A model that measures the target's size
predicts the same area at every ``s`` (signed log area ratio ≈ 0); a model that has only learned "the target fills
a quarter of the crop" predicts ``s²`` times the area (signed ratio ≈ 2·log s = ±0.58 for s = 4/3, 3/4), and in
free-running tracking its size error then compounds from frame to frame.

On the ``synthetic`` benchmark a second table follows: the model on training-style pairs of the training and the
held-out split (:mod:`grm_jax.evaluate.pairs`), which tells overfitting (good on training pairs, poor on held-out
ones) from a tracker whose crops differ from the training crops.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags

from grm_jax import checkpoints, cli
from grm_jax.config import test_threshold
from grm_jax.evaluate import metrics, pairs
from grm_jax.evaluate.run import load_sequences
from grm_jax.models import build_model
from grm_jax.track.tracker import BatchTracker, TrackerParams

MODES = ("free-running", "free-running, no Hann window", "re-centred", "re-centred, no Hann window")
CROP_SCALES = (0.75, 4 / 3)  # the scale-response modes: "re-centred, crop ×0.75" and "re-centred, crop ×1.33"


def scaled_box(box: np.ndarray, s: float) -> np.ndarray:
    """(x, y, w, h) scaled by ``s`` about its centre: (cx − s·w/2, cy − s·h/2, s·w, s·h)."""
    x, y, w, h = np.asarray(box, np.float64)
    return np.array([x + w / 2 - s * w / 2, y + h / 2 - s * h / 2, s * w, s * h])


def track(model, variables, params: TrackerParams, frames, gt: np.ndarray, recentre: bool,
          crop_scale: float = 1.0) -> np.ndarray:
    """Boxes of one sequence (row 0 = the first ground-truth box); ``recentre``: every crop around gt[t−1]
    (scaled by ``crop_scale`` about its centre)."""
    tracker = BatchTracker(model, variables, params, batch_size=1, maps=False)
    tracker.initialize(0, frames(0), gt[0])
    boxes = [np.asarray(gt[0], np.float64)]
    for t in range(1, len(gt)):
        if recentre and np.all(np.isfinite(gt[t - 1])) and gt[t - 1][2] > 0 and gt[t - 1][3] > 0:
            tracker.state[0] = scaled_box(gt[t - 1], crop_scale)
        state, _ = tracker.track([frames(t)])
        boxes.append(state[0].copy())
    return np.stack(boxes)


def errors(pred: np.ndarray, gt: np.ndarray, visible) -> tuple[np.ndarray, np.ndarray]:
    """Centre distance (px) and log(predicted area / true area) (signed) on the visible frames after frame 0."""
    keep = np.ones(len(gt), bool) if visible is None else np.asarray(visible, bool)
    keep[0] = False
    keep &= np.all(np.isfinite(gt), axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    p, g = pred[keep], gt[keep]
    centre = np.linalg.norm((p[:, :2] + p[:, 2:] / 2) - (g[:, :2] + g[:, 2:] / 2), axis=1)
    size = np.log(np.maximum(p[:, 2] * p[:, 3], 1e-9) / (g[:, 2] * g[:, 3]))
    return centre, size


def diagnose(config, variables, sequences, read_frame) -> list[dict]:
    """One row per mode (see the module docstring)."""
    model = build_model(config)
    base = TrackerParams.from_config(config, "synthetic")
    predictions = {}
    for mode in MODES:
        params = TrackerParams(**{**base.__dict__, "hann_window": "no Hann" not in mode})
        predictions[mode] = [track(model, variables, params, lambda t, s=s: read_frame(s.frames[t]), s.gt,
                                   recentre=mode.startswith("re-centred")) for s in sequences]
    for scale in CROP_SCALES:
        predictions[f"re-centred, crop ×{scale:.2f}"] = [
            track(model, variables, base, lambda t, s=s: read_frame(s.frames[t]), s.gt, recentre=True,
                  crop_scale=scale) for s in sequences]
    predictions["previous ground truth"] = [np.concatenate([s.gt[:1], s.gt[:-1]]) for s in sequences]
    predictions["first box"] = [np.repeat(s.gt[:1], len(s.gt), axis=0) for s in sequences]
    rows = []
    for mode, preds in predictions.items():
        per_seq = [metrics.sequence_metrics(p, s.gt, s.dataset, visible=s.visible, name=s.name)
                   for p, s in zip(preds, sequences)]
        centre, size = (np.concatenate(v) for v in zip(*(errors(p, s.gt, s.visible)
                                                        for p, s in zip(preds, sequences))))
        rows.append(dict(mode=mode, auc=metrics.summary(per_seq)["auc"], centre_px=float(np.median(centre)),
                         size=float(np.median(np.abs(size))), size_signed=float(np.median(size))))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| mode | AUC | median centre error px | median abs log area ratio | median log area ratio |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['auc']:.1f} | {r['centre_px']:.1f} | {r['size']:.2f} | {r['size_signed']:+.2f} |"
              for r in rows]
    return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_string("workdir", "runs/demo", "a training workdir (its config is recorded there)", flag_values=fv)
    flags.DEFINE_string("dataset", "synthetic", "benchmark", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "benchmark root (default: the config's data_dir)", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Prints the table of the workdir's model on the dataset."""
    cli.no_arguments(args)
    variables, config = checkpoints.load_variables(f"{fv.workdir}/checkpoints")
    sequences, read = load_sequences(config, fv.dataset, fv.data_dir or config.data.data_dir)
    print(format_rows(diagnose(config, variables, sequences, read)))
    if fv.dataset == "synthetic":  # its training split is known: the model on training-style pairs of both splits
        rows = pairs.pair_rows(config, build_model(config), variables, pairs.synthetic_sources(config),
                               threshold=test_threshold(config, "synthetic"))
        print("\n" + pairs.format_pair_rows(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.evaluate.diagnose [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__)


if __name__ == "__main__":
    sys.exit(main())
