"""Evaluate GRM on a tracking benchmark.

  python eval.py --config configs/grm.py:B/256 --checkpoint ckpt/grm --dataset lasot --data_dir /data/LaSOT
  python eval.py --analyze_only --dataset lasot --data_dir /data/LaSOT results/ours official=raw/GRM_lasot
  python eval.py --vis_dir runs/demo/vis --vis_sequences synthetic-000 --vis_every 10   # overlay video + grids

With no flags: re-evaluates the demo run (``runs/demo``, from ``make demo``) on the held-out synthetic sequences.
``--checkpoint`` is an Orbax directory (a training run's workdir, its ``checkpoints/`` or a converted checkpoint)
or an official ``.pth``/``.pth.tar``. Result files follow the official layout; finished sequences are skipped on a
rerun if the results folder's record (``grm_jax_results.json``) shows the same weights, threshold, crop and config;
otherwise eval.py stops and says what differs (``--retrack`` deletes those results and tracks again). The division
threshold is the config's ``TEST.HYPER`` value for the dataset unless ``--threshold`` is given.

On several hosts: the same command on every host with ``--config.train.distributed=True`` (and, where the cluster
does not describe itself, ``--config.train.coordinator_address=HOST:PORT --config.train.num_processes=N
--config.train.process_id=I``); each process tracks every N-th sequence and process 0 writes the report.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging

from grm_jax import cli, compilation_cache, distributed
from grm_jax.checkpoints import load_checkpoint_variables
from grm_jax.config import check_threshold, validate
from grm_jax.evaluate import report
from grm_jax.evaluate.run import evaluate, load_sequences
from grm_jax.viz.video import OverlayRecorder

_CONFIG = cli.define_config("configs/grm_tiny_synthetic.py")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "runs/demo", "Orbax checkpoint / training workdir / official .pth")
_DATASET = flags.DEFINE_string("dataset", "synthetic", "benchmark: synthetic, lasot, lasot_ext, got10k_test, "
                               "got10k_val, trackingnet, uav, nfs, otb, avist, tnl2k, itb")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "benchmark root (default: config.data.data_dir for synthetic)")
_RESULTS = flags.DEFINE_string("results_dir", None, "default: <checkpoint>/results/<dataset> (with --analyze_only: "
                               "runs/analysis/<dataset>)")
_BATCH = flags.DEFINE_integer("batch_size", None, "sequences tracked together (default config.eval.batch_size)")
_CROP = flags.DEFINE_enum("crop", None, ["host", "device"], "crop path (default config.eval.crop)")
_THRESHOLD = flags.DEFINE_float("threshold", None, "override the dataset's division threshold")
_RETRACK = flags.DEFINE_bool("retrack", False, "when --results_dir holds results of another model, threshold, crop "
                             "or config, delete them and track again (default: stop and say what differs)")
_SEQUENCES = flags.DEFINE_string("sequence_list", None, "file with the sequence names to evaluate")
_VIS_DIR = flags.DEFINE_string("vis_dir", None, "write an overlay video per sequence and token-division grids "
                               "(grm_jax.viz) into this folder; those sequences are tracked again")
_VIS_SEQUENCES = flags.DEFINE_list("vis_sequences", None, "sequence names to visualise (default: all)")
_VIS_EVERY = flags.DEFINE_integer("vis_every", 10, "token grid every N frames of a visualised sequence")
_ANALYZE = flags.DEFINE_bool("analyze_only", False, "only score existing result folders (positional arguments, "
                             "DIR or NAME=DIR) and write the ranked report")


def main(argv: list[str]) -> int:
    compilation_cache.enable()  # $GRM_JAX_CACHE ("off" to disable), else ~/.cache/grm_jax/xla
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    data_dir = _DATA_DIR.value or config.data.data_dir
    if _ANALYZE.value:
        sequences, _ = load_sequences(config, _DATASET.value, data_dir, _SEQUENCES.value)
        dirs, names = report.parse_result_dirs(argv[1:])
        out_dir = _RESULTS.value or pathlib.Path("runs") / "analysis" / _DATASET.value
        written = report.write_report(dirs, sequences, out_dir, _DATASET.value, names)
        print(pathlib.Path(written["markdown"]).read_text())
        print(f"plots: {', '.join(v for k, v in written.items() if k not in ('markdown', 'summaries'))}")
        return 0
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    validate(config)
    distributed.initialize(config)  # config.train.distributed: the processes share the sequences
    if _THRESHOLD.value is not None:
        check_threshold(_THRESHOLD.value, "--threshold")
    checkpoint = pathlib.Path(_CHECKPOINT.value)
    variables = load_checkpoint_variables(checkpoint, config, cli.config_given())
    results_dir = _RESULTS.value or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "results" / \
        _DATASET.value
    recorder = None
    if _VIS_DIR.value:
        recorder = OverlayRecorder(_VIS_DIR.value, config.model.patch_size, every=_VIS_EVERY.value)
    out = evaluate(config, variables, _DATASET.value, data_dir, results_dir,
                   batch_size=_BATCH.value or config.eval.batch_size, crop=_CROP.value or config.eval.crop,
                   threshold=_THRESHOLD.value, sequence_list=_SEQUENCES.value, on_frame=recorder,
                   on_frame_sequences=_VIS_SEQUENCES.value, on_mismatch="retrack" if _RETRACK.value else "error",
                   checkpoint=checkpoint)
    if recorder is not None:
        recorder.close()
        print(f"visualisations: {len(recorder.written)} files in {_VIS_DIR.value}")
    if "scores" in out:
        print(f"{_DATASET.value} (threshold {out['threshold']}): "
              + ", ".join(f"{k} {v:.1f}" for k, v in out["scores"].items()))
        print(f"report: {out['report']}")
    else:
        print(f"results in {out['results_dir']}: {out.get('note', '')}")
    for problem in out["rejected"]:
        print(f"warning: not tracked: {problem}", file=sys.stderr)
    return 1 if out["rejected"] else 0


if __name__ == "__main__":
    cli.run(main)
