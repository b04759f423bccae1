"""Evaluate GRM on a tracking benchmark.

  python eval.py --config configs/grm_vitb256.py --checkpoint ckpt/grm --dataset lasot --data_dir /data/LaSOT
  python eval.py --analyze_only --dataset lasot --data_dir /data/LaSOT results/ours official=raw/GRM_lasot

With no flags: re-evaluates the demo run (``runs/demo``, from ``make demo``) on the held-out synthetic sequences.
``--checkpoint`` is an Orbax directory (a training run's workdir, its ``checkpoints/`` or a converted checkpoint)
or an official ``.pth``/``.pth.tar``. Result files follow the official layout; finished sequences are skipped on a
rerun. The division threshold is the config's ``TEST.HYPER`` value for the dataset unless ``--threshold`` is given.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grm_tiny_synthetic.py", "experiment config file")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "runs/demo", "Orbax checkpoint / training workdir / official .pth")
_DATASET = flags.DEFINE_string("dataset", "synthetic", "benchmark: synthetic, lasot, lasot_ext, got10k_test, "
                               "got10k_val, trackingnet, uav, nfs, otb, avist, tnl2k, itb")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "benchmark root (default: config.data.data_dir for synthetic)")
_RESULTS = flags.DEFINE_string("results_dir", None, "default: <checkpoint>/results/<dataset>")
_BATCH = flags.DEFINE_integer("batch_size", None, "sequences tracked together (default config.eval.batch_size)")
_CROP = flags.DEFINE_enum("crop", None, ["host", "device"], "crop path (default config.eval.crop)")
_THRESHOLD = flags.DEFINE_float("threshold", None, "override the dataset's division threshold")
_SEQUENCES = flags.DEFINE_string("sequence_list", None, "file with the sequence names to evaluate")
_ANALYZE = flags.DEFINE_bool("analyze_only", False, "only score existing result folders (positional arguments, "
                             "DIR or NAME=DIR) and write the ranked report")


def _variables(path: pathlib.Path, config):
    from grm_jax import checkpoints

    if path.is_file():
        from grm_jax.convert.official import official_to_variables

        return official_to_variables(path, config)
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            variables, _ = checkpoints.load_variables(candidate)
            return variables
    raise FileNotFoundError(f"no checkpoint in {path} (expected an Orbax directory or a .pth file)")


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    data_dir = _DATA_DIR.value or config.data.data_dir
    if _ANALYZE.value:
        from grm_jax.evaluate import report
        from grm_jax.evaluate.run import load_sequences

        sequences, _ = load_sequences(config, _DATASET.value, data_dir, _SEQUENCES.value)
        dirs, names = report.parse_result_dirs(argv[1:])
        out_dir = _RESULTS.value or "."
        written = report.write_report(dirs, sequences, out_dir, _DATASET.value, names)
        print(pathlib.Path(written["markdown"]).read_text())
        print(f"plots: {', '.join(v for k, v in written.items() if k not in ('markdown', 'summaries'))}")
        return 0
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from grm_jax.config import validate
    from grm_jax.evaluate.run import evaluate

    validate(config)
    checkpoint = pathlib.Path(_CHECKPOINT.value)
    variables = _variables(checkpoint, config)
    results_dir = _RESULTS.value or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "results" / \
        _DATASET.value
    out = evaluate(config, variables, _DATASET.value, data_dir, results_dir,
                   batch_size=_BATCH.value or config.eval.batch_size, crop=_CROP.value or config.eval.crop,
                   threshold=_THRESHOLD.value, sequence_list=_SEQUENCES.value)
    if "scores" in out:
        print(f"{_DATASET.value} (threshold {out['threshold']}): "
              + ", ".join(f"{k} {v:.1f}" for k, v in out["scores"].items()))
        print(f"report: {out['report']}")
    else:
        print(f"results in {out['results_dir']}: {out.get('note', '')}")
    return 0


if __name__ == "__main__":
    app.run(main)
