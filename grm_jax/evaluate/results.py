"""Tracking result files and benchmark-server submissions (docs/evaluation.md#result-files).

Layout, as the official code writes it (``results_dir`` is ``{results_path}/grm/{param}``):

* ``{results_dir}/{seq.name}.txt``: one line per frame (frame 0 = the initialisation box), ``x,y,w,h`` truncated
  to int toward zero (``astype(int)``), comma-separated, no header.
* TrackingNet and GOT-10k: the same file in a ``trackingnet/`` or ``got10k/`` sub-folder, plus
  ``{seq.name}_time.txt`` with the per-frame seconds (``%f``, one per line).
* A sequence whose result file exists is skipped on a rerun (:func:`is_done`), if the folder's record says the
  same tracker wrote it (:mod:`grm_jax.evaluate.provenance`). Files are written to a temporary file in the same
  folder and renamed (:mod:`grm_jax.files`), so an interrupted run never leaves a partial file that would then be
  skipped; they get the umask's mode like any other new file.

Submissions (``transform_got10k.py`` / ``transform_trackingnet.py``): ``got10k_submit/{seq}/{seq}_001.txt`` +
``{seq}/{seq}_time.txt`` and ``trackingnet_submit/{seq}.txt``, each folder zipped next to itself, and the raw
``got10k/`` / ``trackingnet/`` folders zipped too. Unlike the official scripts, which delete both folders after
zipping, the folders are **kept** (the raw results are what :func:`is_done` and the report read).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterable

import numpy as np

from grm_jax.evaluate.benchmarks import read_boxes
from grm_jax.files import atomic_write_text, atomic_write_with

__all__ = [
    "SUBFOLDER_DATASETS",
    "atomic_write_text",
    "format_boxes",
    "format_times",
    "is_done",
    "make_got10k_submission",
    "make_trackingnet_submission",
    "read_results",
    "read_times",
    "result_paths",
    "write_results",
]

#: Dataset tags whose results go to a sub-folder of that name together with a ``_time.txt`` file.
SUBFOLDER_DATASETS = ("trackingnet", "got10k")


def _tag(dataset: str | None) -> str | None:
    """Benchmark name or tag -> tag (``got10k_test`` / ``got10k_val`` -> ``got10k``)."""
    if dataset is None:
        return None
    return "got10k" if dataset.startswith("got10k") else dataset


def result_paths(results_dir: str | os.PathLike, seq_name: str, dataset: str | None = None):
    """``(boxes_path, time_path)``; ``time_path`` is ``None`` unless the dataset is TrackingNet or GOT-10k.

    ``dataset`` may be the sequence's tag (``Sequence.dataset``) or the benchmark name.
    """
    tag = _tag(dataset)
    if tag in SUBFOLDER_DATASETS:
        folder = os.path.join(os.fspath(results_dir), tag)
        return os.path.join(folder, f"{seq_name}.txt"), os.path.join(folder, f"{seq_name}_time.txt")
    return os.path.join(os.fspath(results_dir), f"{seq_name}.txt"), None


def format_boxes(boxes) -> str:
    """``x,y,w,h`` lines, each value truncated toward zero (``-1.7 -> -1``, ``2.9 -> 2``), trailing newline."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        row = int(np.argwhere(~np.isfinite(boxes))[0, 0])
        raise ValueError(f"non-finite box in frame {row}: {boxes[row].tolist()}")
    return "".join(",".join(str(v) for v in row) + "\n" for row in boxes.astype(np.int64).tolist())


def format_times(times) -> str:
    """One ``%f`` (six decimals) per line."""
    return "".join(f"{float(t):f}\n" for t in np.asarray(times, dtype=np.float64).reshape(-1))


def write_results(results_dir: str | os.PathLike, seq_name: str, dataset: str | None, boxes, times=None) -> str:
    """Write one sequence's boxes (and, for TrackingNet / GOT-10k, its per-frame times); returns the boxes path.

    The time file is written first, so an existing boxes file always means a finished sequence.
    """
    boxes_path, time_path = result_paths(results_dir, seq_name, dataset)
    text = format_boxes(boxes)
    if time_path is not None:
        if times is None:
            raise ValueError(f"{dataset} results need per-frame times ({time_path})")
        if len(np.asarray(times).reshape(-1)) != text.count("\n"):
            raise ValueError(f"{len(np.asarray(times).reshape(-1))} times for {text.count(chr(10))} boxes")
        atomic_write_text(time_path, format_times(times))
    atomic_write_text(boxes_path, text)
    return boxes_path


def is_done(results_dir: str | os.PathLike, seq, dataset: str | None = None) -> bool:
    """Whether ``seq`` (a ``Sequence`` or a name) already has its result file(s), so that a rerun skips it.

    ``dataset`` defaults to ``seq.dataset``; for TrackingNet / GOT-10k the time file must exist as well.
    """
    name = seq if isinstance(seq, str) else seq.name
    if dataset is None and not isinstance(seq, str):
        dataset = seq.dataset
    boxes_path, time_path = result_paths(results_dir, name, dataset)
    return os.path.isfile(boxes_path) and (time_path is None or os.path.isfile(time_path))


def read_results(path: str | os.PathLike) -> np.ndarray:
    """(N, 4) float64 boxes from a result file, tab- or comma-separated (tab tried first, as the analysis code).

    NaN values are kept (the metrics reject them with the sequence's name).
    """
    return read_boxes(os.fspath(path), ("\t", ","), allow_nan=True)


def read_times(path: str | os.PathLike) -> np.ndarray:
    """(N,) float64 seconds from a ``_time.txt`` file."""
    with open(path, encoding="utf-8") as f:
        return np.asarray([float(line) for line in f if line.strip()], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Submissions


def _zip_folder(folder: str) -> str:
    """``{folder}.zip`` next to ``folder``: its directories (``name/``) and files, relative paths, sorted."""
    archive = folder.rstrip(os.sep) + ".zip"

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                relative = os.path.relpath(dirpath, folder)
                if relative != ".":
                    zf.write(dirpath, relative.replace(os.sep, "/") + "/")
                for file in sorted(filenames):
                    member = file if relative == "." else os.path.join(relative, file)
                    zf.write(os.path.join(dirpath, file), member.replace(os.sep, "/"))

    atomic_write_with(archive, write, suffix=".zip.tmp")
    return archive


def _raw_results(raw_dir: str, sequences: Iterable[str] | None) -> list[str]:
    """Sequence names with a boxes file in ``raw_dir``; with ``sequences``, all of them must be there."""
    if not os.path.isdir(raw_dir):
        raise FileNotFoundError(f"{raw_dir}: no results folder")
    found = sorted(f[:-4] for f in os.listdir(raw_dir)
                   if f.endswith(".txt") and not f.endswith("_time.txt") and not f.startswith("."))
    if sequences is not None:
        missing = sorted(set(sequences) - set(found))
        if missing:
            raise FileNotFoundError(f"{raw_dir}: {len(missing)} sequences without results, e.g. {missing[:3]}")
        found = sorted(set(sequences))
    return found


def make_got10k_submission(results_dir: str | os.PathLike, sequences: Iterable[str] | None = None) -> dict:
    """GOT-10k server format from ``{results_dir}/got10k/``.

    ``got10k_submit/{seq}/{seq}_001.txt`` (int boxes, comma-separated) and ``{seq}/{seq}_time.txt`` (copied),
    zipped to ``got10k_submit.zip``; the raw folder is zipped to ``got10k.zip``. Both folders are kept (the
    official script deletes them). ``sequences``: names that must all be present (e.g. the 180 test videos).
    Returns the paths ``{'submit_dir', 'submit_zip', 'raw_zip'}``.
    """
    results_dir = os.fspath(results_dir)
    raw = os.path.join(results_dir, "got10k")
    submit = os.path.join(results_dir, "got10k_submit")
    for name in _raw_results(raw, sequences):
        boxes = read_results(os.path.join(raw, f"{name}.txt"))
        atomic_write_text(os.path.join(submit, name, f"{name}_001.txt"), format_boxes(boxes))
        time_path = os.path.join(raw, f"{name}_time.txt")
        if os.path.isfile(time_path):
            shutil.copyfile(time_path, os.path.join(submit, name, f"{name}_time.txt"))
    os.makedirs(submit, exist_ok=True)
    return {"submit_dir": submit, "submit_zip": _zip_folder(submit), "raw_zip": _zip_folder(raw)}


def make_trackingnet_submission(results_dir: str | os.PathLike, sequences: Iterable[str] | None = None) -> dict:
    """TrackingNet server format from ``{results_dir}/trackingnet/``.

    ``trackingnet_submit/{seq}.txt`` (int boxes, comma-separated) zipped to ``trackingnet_submit.zip``; the raw
    folder is zipped to ``trackingnet.zip``. Both folders are kept (the official script deletes them).
    Returns the paths ``{'submit_dir', 'submit_zip', 'raw_zip'}``.
    """
    results_dir = os.fspath(results_dir)
    raw = os.path.join(results_dir, "trackingnet")
    submit = os.path.join(results_dir, "trackingnet_submit")
    for name in _raw_results(raw, sequences):
        boxes = read_results(os.path.join(raw, f"{name}.txt"))
        atomic_write_text(os.path.join(submit, f"{name}.txt"), format_boxes(boxes))
    os.makedirs(submit, exist_ok=True)
    return {"submit_dir": submit, "submit_zip": _zip_folder(submit), "raw_zip": _zip_folder(raw)}
