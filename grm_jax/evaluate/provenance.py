"""What made a results folder: a record written beside the tracking results, and the check that keeps a rerun from
reusing or mixing results of another model, threshold, crop path or config.

A rerun of an evaluation skips the sequences whose result files exist (``grm_jax.evaluate.results.is_done``);
that is only right if the same tracker wrote them. So ``{results_dir}/grm_jax_results.json`` records

* ``model_digest``: SHA-256 of every variable (path, dtype, shape, bytes), the identity of the weights whatever
  file they came from, with ``checkpoint`` and ``step`` beside it for people;
* ``threshold`` (the division threshold used), ``crop`` (``host`` / ``device``), ``dataset``;
* ``config_digest``: SHA-256 of ``config.model`` and ``config.test`` (and ``config.data.synthetic`` for the
  generated benchmark, whose sequences it defines);
* ``grm_jax_version`` and, informative only, the git commit of the code.

Before tracking, :func:`prepare` compares the folder's record with the new one. Equal: finished sequences are
skipped as before. Different, or result files without a record: by default a :class:`StaleResultsError` that
names each difference and what to do; with ``on_mismatch='retrack'`` the old result files are deleted and every
sequence is tracked again (``train.py`` does this for its own ``results/`` folder, whose model changes each run).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess

import jax
import numpy as np

import grm_jax
from grm_jax.errors import StaleResultsError
from grm_jax.evaluate import results
from grm_jax.files import atomic_write_text

RECORD_NAME = "grm_jax_results.json"
#: Fields that must be equal for old results to count as this run's.
COMPARED = ("model_digest", "threshold", "crop", "dataset", "config_digest", "grm_jax_version")


def variables_digest(variables) -> str:
    """SHA-256 over (path, dtype, shape, bytes) of every leaf in path order; the first 16 hex digits."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def config_digest(config, dataset: str) -> str:
    """SHA-256 of the JSON of ``config.model`` and ``config.test`` (+ ``config.data.synthetic`` for ``synthetic``)."""
    parts = {"model": config.model.to_dict(), "test": config.test.to_dict()}
    if dataset == "synthetic":
        parts["synthetic"] = config.data.synthetic.to_dict()
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_commit() -> str | None:
    """The git commit of the package's checkout, if it is one (informative; not compared)."""
    root = pathlib.Path(grm_jax.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def make_record(config, variables, *, dataset: str, threshold: float, crop: str, checkpoint=None,
                step: int | None = None) -> dict:
    """The record of a tracking run (see the module docstring)."""
    return dict(model_digest=variables_digest(variables), checkpoint=None if checkpoint is None else str(checkpoint),
                step=None if step is None else int(step), threshold=float(threshold), crop=crop, dataset=dataset,
                config_digest=config_digest(config, dataset), grm_jax_version=grm_jax.__version__,
                code_commit=code_commit())


def read_record(results_dir) -> dict | None:
    path = pathlib.Path(results_dir) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StaleResultsError(f"{path}: unreadable record of the results in {results_dir} ({err}); delete the "
                                f"folder or pass --retrack") from err


def write_record(results_dir, record: dict) -> None:
    path = pathlib.Path(results_dir) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def differences(old: dict, new: dict) -> list[str]:
    """``'field: old → new'`` for every compared field that differs (the model's step and file added to it)."""
    out = []
    for key in COMPARED:
        if old.get(key) != new.get(key):
            if key == "model_digest":
                out.append(f"model: {_describe(old)} → {_describe(new)}")
            else:
                out.append(f"{key}: {old.get(key)} → {new.get(key)}")
    return out


def _describe(record: dict) -> str:
    where = [f"step {record['step']}" if record.get("step") is not None else None, record.get("checkpoint")]
    where = ", ".join(w for w in where if w)
    return f"{record.get('model_digest')}" + (f" ({where})" if where else "")


def result_files(results_dir, dataset: str) -> list[pathlib.Path]:
    """The result files (boxes and time ``.txt``) of ``dataset`` in ``results_dir``."""
    raw = pathlib.Path(os.path.dirname(results.result_paths(results_dir, "x", dataset)[0]))
    return sorted(p for p in raw.glob("*.txt") if p.is_file()) if raw.is_dir() else []


def prepare(results_dir, record: dict, on_mismatch: str = "error") -> list[str]:
    """Make ``results_dir`` hold only results of ``record``'s run; returns the differences found (empty: none).

    ``on_mismatch``: ``'error'`` raises :class:`StaleResultsError`; ``'retrack'`` deletes the old result files
    (so that no old file is ever taken for a finished sequence of the new run) and writes the new record.
    """
    if on_mismatch not in ("error", "retrack"):
        raise ValueError(f"on_mismatch = {on_mismatch!r} is not 'error' or 'retrack'")
    old = read_record(results_dir)
    existing = result_files(results_dir, record["dataset"])
    if old is None:
        found = [f"{len(existing)} result files in {results_dir} with no record of what made them"] if existing else []
    else:
        found = differences(old, record)
    if found and on_mismatch == "error":
        raise StaleResultsError(
            f"{results_dir} holds results of another run ({'; '.join(found)}). Finished sequences would be reused "
            f"as if this run had tracked them: pass --retrack to delete them and track again, or choose another "
            f"--results_dir.")
    if found:
        for path in existing:
            path.unlink()
    if found or old is None:
        write_record(results_dir, record)
    return found
