"""Training curves as PNG from a run's ``WORKDIR/metrics.jsonl`` (one JSON record per logged step).

  python -m grm_jax.viz.curves WORKDIR [--out DIR]      # default DIR: WORKDIR/curves

One figure per group (:data:`GROUPS`), x axis = step:

* ``losses``: ``Ls/total``, ``Ls/giou``, ``Ls/l1``, ``Ls/loc``;
* ``iou``: ``IoU`` (training batches' mean IoU);
* ``learning_rates``: ``lr/head``, ``lr/backbone``, ``lr/divide`` (log scale);
* ``interaction_ratio``: one line per division layer (share of search tokens interacting with the template);
* ``throughput``: ``samples_per_s`` and ``grad_norm`` (two panels).

A resumed run appends records again from its checkpoint's step; the last record of each step wins.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from absl import app, flags

from grm_jax import cli

GROUPS = {
    "losses": ["Ls/total", "Ls/giou", "Ls/l1", "Ls/loc"],
    "iou": ["IoU"],
    "learning_rates": ["lr/head", "lr/backbone", "lr/divide"],
    "interaction_ratio": ["interaction_ratio"],
    "throughput": ["samples_per_s", "grad_norm"],
}
LINE_STYLES = ("-", (0, (6, 3)), (0, (2, 2)), (0, (6, 2, 2, 2)))


def read_metrics(path) -> list[dict]:
    """Records of a ``metrics.jsonl`` sorted by step, one per step (the last written wins); blank lines skipped."""
    by_step: dict[int, dict] = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[k] for k in sorted(by_step)]


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key`` over the records that hold it; values (N,) or (N, L−1) for per-layer lists."""
    rows = [r for r in records if key in r]
    return (np.array([r["step"] for r in rows], np.int64),
            np.array([r[key] for r in rows], np.float64))


def plot_group(records: list[dict], group: str):
    """A matplotlib Figure with the curves of ``group`` (a :data:`GROUPS` key); missing keys are left out."""
    # matplotlib (slow to import, its backend chosen first) only where a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = GROUPS[group]
    two_panels = group == "throughput"
    fig = Figure(figsize=(9, 3.6) if two_panels else (6, 3.6), dpi=100)
    axes = fig.subplots(1, 2) if two_panels else [fig.subplots()]
    for i, key in enumerate(keys):
        ax = axes[i] if two_panels else axes[0]
        steps, values = series(records, key)
        if not steps.size:
            continue
        if values.ndim == 2:
            for layer in range(values.shape[1]):
                ax.plot(steps, values[:, layer], label=f"block {layer + 1}")
        else:  # line styles keep equal curves (e.g. learning rates of one value) apart
            ax.plot(steps, values, label=key, linestyle=LINE_STYLES[i % len(LINE_STYLES)])
        if two_panels:
            ax.set_title(key)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_lines() and not two_panels:
            ax.legend(fontsize=8)
    if group == "learning_rates":
        axes[0].set_yscale("log")
    if group in ("iou", "interaction_ratio"):
        axes[0].set_ylim(0, 1)
    if not two_panels:
        axes[0].set_title(group.replace("_", " "))
    fig.tight_layout()
    return fig


def write_curves(workdir, out_dir=None) -> dict[str, pathlib.Path]:
    """One PNG per group with data, ``out_dir/<group>.png`` (default ``WORKDIR/curves``); returns group → path."""
    workdir = pathlib.Path(workdir)
    path = workdir / "metrics.jsonl" if workdir.is_dir() else workdir
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl at {path}")
    records = read_metrics(path)
    out_dir = pathlib.Path(out_dir) if out_dir else path.parent / "curves"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for group, keys in GROUPS.items():
        if any(series(records, key)[0].size for key in keys):
            written[group] = out_dir / f"{group}.png"
            plot_group(records, group).savefig(written[group])
    return written


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides the positional WORKDIR."""
    flags.DEFINE_string("out", None, "output folder (default: WORKDIR/curves)", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Writes the curves of the workdir ``args[1]`` and names each file."""
    if len(args) != 2:
        raise app.UsageError(f"expected one WORKDIR (a training workdir or its metrics.jsonl), got {args[1:]}")
    for group, path in write_curves(args[1], fv.out).items():
        print(f"{group}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.viz.curves WORKDIR [--out DIR]`` or ``grm-curves ...`` (``argv`` like ``sys.argv``;
    ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__)


if __name__ == "__main__":
    sys.exit(main())
