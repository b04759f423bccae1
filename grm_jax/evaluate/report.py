"""Compare trackers' result folders on one benchmark: a Markdown table ranked by AUC and success / precision plots.

``python -m grm_jax.evaluate.report --dataset NAME --data_dir ROOT [--out DIR] RESULT_DIR [NAME=RESULT_DIR ...]``

Per sequence the metrics are those of the official analysis code (docs/evaluation.md#metrics, computed by
:mod:`grm_jax.evaluate.metrics`): success curve over IoU thresholds 0, 0.05, ..., 1 (21 values), precision curve
over 0..50 px and normalised precision over 0..0.50 (51 values each). They are averaged over sequences and reported
×100 as in the official tables:

* **AUC** = mean of the 21 averaged success values (not a trapezoid integral);
* **P@20** = precision curve at 20 px; **NP@0.20** = normalised precision at 0.20;
* **OP50 / OP75** = success at IoU 0.50 / 0.75 (indices 10 and 15 of the curve);
* for ``got10k_val`` additionally **AO** and **SR0.50 / SR0.75** as the GOT-10k toolkit and server compute them
  (``metrics.got10k_metrics``: the toolkit's IoU with boxes clipped to the image, frames with ``cover.label`` 0
  dropped, frames of all sequences pooled); the per-sequence means are in the scores as ``AO_seq_mean`` etc.

Result files are looked up as ``{dir}/{seq.name}.txt``, then in the ``got10k/`` / ``trackingnet/`` sub-folder our
writer uses, then without the ``uav_`` / ``nfs_`` / ``otb_`` prefix (raw results named either way are found).
Plots: legend entries ``name [score]`` sorted best first, like the official ``plot_results.py``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence as SequenceABC

import numpy as np
from absl import app, flags
from tqdm import tqdm

from grm_jax import cli
from grm_jax.evaluate import metrics
from grm_jax.evaluate.benchmarks import Sequence, load_benchmark
from grm_jax.evaluate.results import read_results, result_paths

__all__ = [
    "TrackerSummary",
    "compare_trackers",
    "evaluate_tracker",
    "find_result_file",
    "main",
    "markdown_table",
    "plot_curves",
    "summarize",
    "write_report",
]

_PREFIXES = ("uav_", "nfs_", "otb_")


@dataclasses.dataclass
class TrackerSummary:
    """One tracker on one benchmark: curves averaged over sequences (in %) and the headline numbers."""

    name: str
    results_dir: str
    sequences: list[str]
    success_curve: np.ndarray         # (21,) %
    precision_curve: np.ndarray       # (51,) %
    norm_precision_curve: np.ndarray  # (51,) %
    scores: dict                      # AUC, P@20, NP@0.20, OP50, OP75 (+ AO, SR0.50, SR0.75 for GOT-10k)


# ----------------------------------------------------------------------------------------------------------------


def find_result_file(results_dir: str, seq: Sequence) -> str | None:
    """The result file of ``seq`` in ``results_dir``, or ``None`` (lookup order in the module docstring)."""
    names = [seq.name] + [seq.name[len(p):] for p in _PREFIXES if seq.name.startswith(p)]
    for name in names:
        candidates = [os.path.join(results_dir, f"{name}.txt"), result_paths(results_dir, name, seq.dataset)[0]]
        for path in candidates:
            if os.path.isfile(path):
                return path
    return None


def evaluate_tracker(results_dir: str, sequences: SequenceABC[Sequence], skip_missing: bool = False) -> dict:
    """``{sequence name: per-sequence metrics}`` for one result folder.

    A missing result file raises ``FileNotFoundError`` naming it, unless ``skip_missing`` (then it is left out).
    Each value is ``metrics.sequence_metrics(pred, seq.gt, seq.dataset, visible=seq.visible)``.
    """
    out = {}
    for seq in _progress(sequences, os.path.basename(os.path.normpath(results_dir))):
        path = find_result_file(results_dir, seq)
        if path is None:
            if skip_missing:
                continue
            raise FileNotFoundError(f"{os.path.join(results_dir, seq.name + '.txt')}: result file not found")
        pred = read_results(path)  # a malformed line raises naming the file and line
        out[seq.name] = metrics.sequence_metrics(pred, seq.gt, seq.dataset, visible=seq.visible,
                                                 name=f"{seq.name} ({path})")
        if seq.dataset == "got10k" and len(seq.gt) > 1:
            out[seq.name]["got10k_iou"] = _got10k_iou(metrics, seq, pred, path)
    return out


def _got10k_iou(metrics, seq: Sequence, pred: np.ndarray, path: str) -> np.ndarray:
    """The toolkit's scored IoUs of one GOT-10k sequence; its ``cover.label`` and ``meta_info.ini`` are needed."""
    folder = os.path.dirname(seq.frames[0]) if seq.frames else seq.name
    for value, file in ((seq.cover, "cover.label"), (seq.resolution, "meta_info.ini")):
        if value is None:
            raise FileNotFoundError(f"{os.path.join(folder, file)}: missing (or, for meta_info.ini, without a "
                                    f"'resolution: (W, H)' line); GOT-10k AO / SR are computed as its toolkit "
                                    f"does, which reads it (sequence {seq.name})")
    return metrics.got10k_sequence_iou(pred, seq.gt, seq.cover, seq.resolution, name=f"{seq.name} ({path})")


def summarize(per_sequence: SequenceABC, got10k: bool = False) -> dict:
    """Curves averaged over sequences (×100) and the headline numbers (``metrics.summary``; rules above).

    Returns ``{'success_curve', 'precision_curve', 'norm_precision_curve', 'scores'}`` with ``scores`` keyed
    ``AUC``, ``P@20``, ``NP@0.20``, ``OP50``, ``OP75`` (+ ``AO``, ``SR0.50``, ``SR0.75`` with ``got10k``).
    """
    if not per_sequence:
        raise ValueError("no sequences to summarise (no result file matched the benchmark's sequences)")
    total = metrics.summary(list(per_sequence))
    scores = {"AUC": total["auc"], "P@20": total["precision"], "NP@0.20": total["norm_precision"],
              "OP50": total["op50"], "OP75": total["op75"]}
    if got10k:
        got = metrics.got10k_metrics([m["got10k_iou"] for m in per_sequence])
        scores.update({"AO": got["ao"], "SR0.50": got["sr50"], "SR0.75": got["sr75"],
                       "AO_seq_mean": got["ao_seq_mean"], "SR0.50_seq_mean": got["sr50_seq_mean"],
                       "SR0.75_seq_mean": got["sr75_seq_mean"]})
    curves = {key: np.asarray(total[key]) for key in ("success_curve", "precision_curve", "norm_precision_curve")}
    return {**curves, "scores": {key: float(value) for key, value in scores.items()}}


def compare_trackers(result_dirs: SequenceABC[str], sequences: SequenceABC[Sequence], names=None,
                     skip_missing: bool = False, got10k: bool = False) -> list[TrackerSummary]:
    """Evaluate every result folder on the same sequences; best AUC first.

    With ``skip_missing``, a sequence missing from any folder is dropped for all trackers (as the official
    ``skip_missing_seq``), so the numbers stay comparable.
    """
    names = list(names) if names is not None else _default_names(result_dirs)
    evaluated = [evaluate_tracker(d, sequences, skip_missing) for d in result_dirs]
    common = [s.name for s in sequences if all(s.name in e for e in evaluated)]
    summaries = []
    for name, directory, per_seq in zip(names, result_dirs, evaluated):
        summary = summarize([per_seq[s] for s in common], got10k=got10k)
        summaries.append(TrackerSummary(name, directory, common, summary["success_curve"],
                                        summary["precision_curve"], summary["norm_precision_curve"],
                                        summary["scores"]))
    return sorted(summaries, key=lambda s: (-s.scores["AUC"], s.name))


def _default_names(result_dirs: SequenceABC[str]) -> list[str]:
    """Folder base names, with the parent folder prepended where two would collide."""
    base = [os.path.basename(os.path.normpath(d)) for d in result_dirs]
    return [os.path.join(os.path.basename(os.path.dirname(os.path.normpath(d))), b) if base.count(b) > 1 else b
            for d, b in zip(result_dirs, base)]


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def markdown_table(summaries: SequenceABC[TrackerSummary], dataset: str) -> str:
    """A Markdown table, one row per tracker in the given order (best AUC first from :func:`compare_trackers`)."""
    keys = ["AUC", "P@20", "NP@0.20", "OP50", "OP75"]
    if summaries and "AO" in summaries[0].scores:
        keys += ["AO", "SR0.50", "SR0.75"]
    count = len(summaries[0].sequences) if summaries else 0
    lines = [f"## {dataset} ({count} sequences)", "",
             "| rank | tracker | " + " | ".join(keys) + " |",
             "|---:|---|" + "---:|" * len(keys)]
    for rank, s in enumerate(summaries, start=1):
        lines.append(f"| {rank} | {s.name} | " + " | ".join(f"{s.scores[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


_PLOTS = {
    # kind: (curve attribute, thresholds attribute in metrics, score key for the legend, title, x label, x limit)
    "success": ("success_curve", "SUCCESS_THRESHOLDS", "AUC", "Success plot", "Overlap threshold", 1.0),
    "precision": ("precision_curve", "PRECISION_THRESHOLDS", "P@20", "Precision plot",
                  "Location error threshold [pixels]", 50.0),
    "norm_precision": ("norm_precision_curve", "NORM_PRECISION_THRESHOLDS", "NP@0.20", "Normalized precision plot",
                       "Location error threshold", 0.5),
}


def plot_curves(summaries: SequenceABC[TrackerSummary], out_dir: str, dataset: str,
                size: tuple[int, int] = (640, 480)) -> dict:
    """Success, precision and normalised-precision plots as ``{out_dir}/{kind}_{dataset}.png`` of ``size`` pixels.

    Legend: ``name [score]`` sorted by that plot's score, best first (AUC for success, P@20, NP@0.20).
    Returns ``{kind: path}``.
    """
    # matplotlib (slow to import, and needs its backend chosen first) only where a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    dpi = 100
    paths = {}
    for kind, (attr, thresholds, key, title, xlabel, xmax) in _PLOTS.items():
        fig = plt.figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
        ax = fig.add_subplot(1, 1, 1)
        for s in sorted(summaries, key=lambda s: (-s.scores[key], s.name)):
            ax.plot(getattr(metrics, thresholds), getattr(s, attr), linewidth=2,
                    label=f"{s.name} [{s.scores[key]:.1f}]")
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 101)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Overlap Precision [%]" if kind == "success" else "Distance Precision [%]")
        ax.set_title(f"{title} ({dataset})")
        ax.grid(True, linestyle="-.")
        ax.legend(loc="lower left" if kind == "success" else "lower right", fontsize=8)
        fig.tight_layout()
        paths[kind] = os.path.join(out_dir, f"{kind}_{dataset}.png")
        fig.savefig(paths[kind], dpi=dpi)
        plt.close(fig)
    return paths


def write_report(result_dirs: SequenceABC[str], sequences: SequenceABC[Sequence], out_dir: str, dataset: str,
                 names=None, skip_missing: bool = False) -> dict:
    """Table + plots into ``out_dir``; returns ``{'markdown': path, 'summaries': [...], kind: png path}``."""
    summaries = compare_trackers(result_dirs, sequences, names, skip_missing, got10k=dataset == "got10k_val")
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, f"report_{dataset}.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown_table(summaries, dataset))
    return {"markdown": md_path, "summaries": summaries, **plot_curves(summaries, out_dir, dataset)}


def _progress(items, description):
    """tqdm over long sequence lists only."""
    if len(items) < 50:
        return items
    return tqdm(items, desc=description, leave=False)


# ----------------------------------------------------------------------------------------------------------------


def parse_result_dirs(specs: SequenceABC[str]) -> tuple[list[str], list[str] | None]:
    """``DIR`` or ``NAME=DIR`` arguments -> (dirs, names or None)."""
    dirs, names = [], []
    for spec in specs:
        name, sep, directory = spec.partition("=")
        if sep and not os.path.isdir(spec):
            dirs.append(directory)
            names.append(name)
        else:
            dirs.append(spec)
            names.append(None)
    default = _default_names(dirs)
    return dirs, [n if n is not None else d for n, d in zip(names, default)]


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides the positional result folders."""
    flags.DEFINE_string("dataset", None, "benchmark name (lasot, nfs, uav, avist, got10k_val, ...)", required=True,
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "the benchmark's root folder", required=True, flag_values=fv)
    flags.DEFINE_string("out", None, "output folder (default: ./report_{dataset})", flag_values=fv)
    flags.DEFINE_string("sequence_list", None, "text file of sequence names (overrides the derived list)",
                        flag_values=fv)
    flags.DEFINE_bool("skip_missing", False, "drop sequences missing from any result folder instead of failing",
                      flag_values=fv)
    flags.DEFINE_bool("no_frame_check", False, "do not check that frame files exist", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Writes the report of the result folders ``args[1:]`` (``DIR`` or ``NAME=DIR``) and prints its table."""
    if len(args) < 2:
        raise app.UsageError("expected at least one result folder (DIR or NAME=DIR)")
    sequences = load_benchmark(fv.dataset, fv.data_dir, fv.sequence_list, check_frames=not fv.no_frame_check)
    dirs, names = parse_result_dirs(args[1:])
    out = write_report(dirs, sequences, fv.out or f"report_{fv.dataset}", fv.dataset, names, fv.skip_missing)
    with open(out["markdown"], encoding="utf-8") as f:
        sys.stdout.write(f.read())
    print(f"\nwritten: {out['markdown']}, " + ", ".join(out[k] for k in _PLOTS))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.evaluate.report --dataset NAME --data_dir ROOT RESULT_DIR ...`` or ``grm-report ...``
    (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__)


if __name__ == "__main__":
    sys.exit(main())
