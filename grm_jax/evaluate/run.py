"""Evaluate a GRM on a benchmark: track every sequence (batched), write the official result files, score them.

Used by ``eval.py`` and by ``train.py``'s evaluation after training. Reruns skip sequences whose result file
exists. The built-in ``synthetic`` benchmark is the held-out (``val``) split of the synthetic tracking dataset.
"""

from __future__ import annotations

import os
import pathlib
import time

import cv2
import jax
import numpy as np
from tqdm import tqdm

from grm_jax import distributed
from grm_jax.data.datasets import make_builder, prepare, synthetic_builder_config
from grm_jax.data.source import DatasetSource
from grm_jax.evaluate import division, provenance, report, results
from grm_jax.evaluate.benchmarks import Sequence, load_benchmark
from grm_jax.models import build_model
from grm_jax.track.tracker import BatchTracker, TrackerParams, track_sequences


class FrameReadError(OSError):
    """A frame file cannot be read (the message names it)."""


def read_frame_rgb(path: str) -> np.ndarray:
    """``cv2.imread`` → RGB uint8 (docs/tracking.md#pre-processing); a missing or unreadable file raises naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameReadError(f"cannot read frame {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def synthetic_benchmark(config, data_dir) -> tuple[list[Sequence], object]:
    """The held-out synthetic sequences (``val`` split of ``config.data.synthetic``), prepared if needed.

    Frames are (source, sequence, frame) references read through the returned source.
    """
    builder = make_builder("synthetic_tracking", data_dir, config=synthetic_builder_config(config))
    distributed.main_first("grm_jax_prepare_synthetic_val", lambda: prepare(builder, None))  # shared disk: once
    source = DatasetSource(builder.data_dir, "val")
    sequences = []
    for i in range(source.num_sequences):
        info = source.sequence_info(i)
        boxes = np.stack([np.asarray(source.record(i, t)["box"], np.float64) for t in range(info.length)])
        sequences.append(Sequence(name=f"synthetic-{i:03d}", frames=[(i, t) for t in range(info.length)],
                                  gt=boxes, dataset="lasot", visible=info.visible))
    return sequences, source


def load_sequences(config, dataset: str, data_dir, sequence_list=None):
    """``(sequences, read_frame)`` of a benchmark name or ``synthetic``."""
    if dataset == "synthetic":
        sequences, source = synthetic_benchmark(config, data_dir)
        return sequences, lambda ref: source.frame(*ref)[0]
    return load_benchmark(dataset, data_dir, sequence_list), read_frame_rgb


def initial_box_problem(seq: Sequence) -> str | None:
    """Why ``seq`` cannot be tracked (its first box is not finite or has no area), naming its annotation file."""
    box = np.asarray(seq.gt[0], np.float64) if len(seq.gt) else np.zeros(0)
    if box.shape == (4,) and np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0:
        return None
    where = seq.gt_file or "its annotation"
    return f"{seq.name}: first box {box.tolist()} in {where} is empty or not finite"


def evaluate(config, variables, dataset: str, data_dir, results_dir, *, batch_size: int = 8, crop: str = "host",
             threshold: float | None = None, sequence_list=None, max_sequences: int | None = None,
             progress: bool = True, on_frame=None, on_frame_sequences=None, on_mismatch: str = "error",
             checkpoint=None, step: int | None = None) -> dict:
    """Track ``dataset`` (a benchmark name of ``load_benchmark`` or ``synthetic``) and return its summary.

    Writes ``results_dir/<sequence>.txt`` (and ``_time.txt`` where the official code does), then
    ``results_dir/report_<dataset>.md`` with the success / precision plots.

    ``on_frame(sequence, t, frame, box, outputs)`` (e.g. :class:`grm_jax.viz.video.OverlayRecorder`) sees every
    frame of the sequences named in ``on_frame_sequences`` (None: all); those are tracked even when their result
    file exists (it is rewritten with the same boxes).

    ``results_dir`` carries a record of what made its results (:mod:`grm_jax.evaluate.provenance`: the weights'
    digest, threshold, crop, config digest, version; ``checkpoint`` and ``step`` name the weights for people).
    Results of another run there raise :class:`~grm_jax.evaluate.provenance.StaleResultsError`, or with
    ``on_mismatch='retrack'`` are deleted and tracked again. A sequence whose first box is empty or not finite is
    not tracked nor scored; the others are, and ``out["rejected"]`` says which and why.

    On several processes (:mod:`grm_jax.distributed`) each process tracks every P-th sequence of those to do,
    and process 0 checks the record first and writes the report from all result files at the end (``results_dir``
    must then be on a file system that every process sees, like the checkpoints); the others return without
    scores (``out["note"]`` says so).
    """
    results_dir = pathlib.Path(results_dir)
    sequences, read = load_sequences(config, dataset, data_dir, sequence_list)
    if max_sequences:
        sequences = sequences[:max_sequences]
    rejected = [problem for problem in map(initial_box_problem, sequences) if problem]
    sequences = [s for s in sequences if not initial_box_problem(s)]
    if not sequences:
        raise ValueError(f"no sequence of {dataset} can be tracked: {'; '.join(rejected)}")
    params = TrackerParams.from_config(config, dataset, crop=crop, threshold=threshold)
    record = provenance.make_record(config, variables, dataset=dataset, threshold=params.threshold, crop=crop,
                                    checkpoint=checkpoint, step=step)
    main = jax.process_index() == 0
    if main:
        results_dir.mkdir(parents=True, exist_ok=True)
        replaced = provenance.prepare(results_dir, record, on_mismatch)
        if replaced:
            print(f"results in {results_dir} were made by another run ({'; '.join(replaced)}): tracking again")
    distributed.barrier(f"grm_jax_eval_prepared_{dataset}")  # every process sees the checked folder
    chosen = None if on_frame_sequences is None else set(on_frame_sequences)
    watched = set() if on_frame is None else {s.name for s in sequences if chosen is None or s.name in chosen}
    todo = distributed.my_share(
        [s for s in sequences if s.name in watched or not results.is_done(results_dir, s, dataset)])
    model = build_model(config)
    if todo:
        tracker = BatchTracker(model, variables, params, batch_size=min(batch_size, len(todo)), maps=bool(watched))
        bar = tqdm(total=sum(len(s.frames) for s in todo), desc=f"track {dataset}", unit="frame",
                   disable=not progress)
        start = time.perf_counter()

        def done(index, result):
            seq = todo[index]
            results.write_results(results_dir, seq.name, dataset, result.boxes, result.times)
            bar.update(len(seq.frames))
            bar.set_postfix(fps=f"{bar.n / (time.perf_counter() - start):.1f}")

        def frame_hook(index, t, frame, box, outputs):
            if todo[index].name in watched:
                on_frame(todo[index], t, frame, box, outputs)

        track_sequences(tracker, [(s.frames, s.gt[0]) for s in todo], read_frame=read, on_done=done,
                        on_frame=frame_hook if watched else None)
        bar.close()
    distributed.barrier(f"grm_jax_eval_tracked_{dataset}", timeout_s=24 * 3600)  # a benchmark can take hours
    if not main:
        return {"results_dir": str(results_dir), "record": record, "rejected": rejected,
                "note": f"process {jax.process_index()} tracked {len(todo)} sequences; process 0 writes the report"}
    if dataset in ("got10k_test", "trackingnet"):  # no local ground truth: the benchmark's server scores
        names = [s.name for s in sequences]
        make = results.make_got10k_submission if dataset == "got10k_test" else results.make_trackingnet_submission
        submission = make(results_dir, names)
        return {"results_dir": str(results_dir), "submission": submission, "record": record, "rejected": rejected,
                "note": f"no local ground truth: upload {submission['submit_zip']} to the {dataset} server"}
    raw_dir = os.path.dirname(results.result_paths(results_dir, "x", dataset)[0])
    written = report.write_report([raw_dir], sequences, str(results_dir), dataset, names=["grm_jax"])
    return dict(scores=written["summaries"][0].scores, report=written["markdown"], results_dir=str(results_dir),
                threshold=params.threshold, record=record, rejected=rejected,
                plots={k: v for k, v in written.items() if k not in ("markdown", "summaries")})


def evaluate_with_baselines(config, variables, initial_variables, dataset: str, data_dir, results_root, *,
                            step: int | None = None, checkpoint=None, **kwargs) -> dict:
    """:func:`evaluate` of ``variables`` with the division statistics of :mod:`grm_jax.evaluate.division`, next to
    two baselines on the same sequences: the untrained model (``initial_variables``, same config) and the tracker
    that keeps the first box. Results go to ``results_root/{dataset}``, ``{dataset}_untrained`` and
    ``{dataset}_first_box``. Returns the trained evaluation's dict plus ``baselines`` ({name: scores}) and
    ``division`` (:meth:`DivisionStats.summary` rows)."""
    results_root = pathlib.Path(results_root)
    stats = division.DivisionStats(config.test.search_factor, config.test.search_size, config.model.patch_size)
    out = evaluate(config, variables, dataset, data_dir, results_root / dataset, on_frame=stats,
                   on_mismatch="retrack", step=step, checkpoint=checkpoint, **kwargs)
    untrained = evaluate(config, initial_variables, dataset, data_dir, results_root / f"{dataset}_untrained",
                         on_mismatch="retrack", step=0, **kwargs)
    sequences, _ = load_sequences(config, dataset, data_dir)
    if kwargs.get("max_sequences"):
        sequences = sequences[:kwargs["max_sequences"]]
    sequences = [s for s in sequences if not initial_box_problem(s)]
    first_dir = results_root / f"{dataset}_first_box"
    division.keep_first_box(sequences, dataset, first_dir)
    first = report.write_report([str(first_dir)], sequences, str(first_dir), dataset, names=["first box"])
    out["baselines"] = {"untrained": untrained.get("scores", {}),
                        "first box": first["summaries"][0].scores}
    out["division"] = stats.summary()
    return out


def format_comparison(out: dict, label: str) -> str:
    """A Markdown table of the trained tracker's scores and the baselines', and the division statistics."""
    keys = ["AUC", "P@20", "NP@0.20", "OP50", "OP75"]
    lines = ["| tracker | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, scores in [(label, out["scores"])] + list(out["baselines"].items()):
        lines.append(f"| {name} | " + " | ".join(f"{scores[k]:.1f}" for k in keys) + " |")
    return "\n".join(lines) + "\n\n" + division.format_division(out["division"])

