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

from absl import flags

from grm_jax import cli, compilation_cache, distributed
from grm_jax.checkpoints import load_checkpoint_variables
from grm_jax.config import check_threshold, validate
from grm_jax.evaluate import report
from grm_jax.evaluate.run import evaluate, load_sequences
from grm_jax.viz.video import OverlayRecorder

#: Relative to the repository root (this file's folder): the default works from any working directory.
DEFAULT_CONFIG = "configs/grm_tiny_synthetic.py"


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides ``--config`` (and its overrides) and ``--verbosity``."""
    flags.DEFINE_string("checkpoint", "runs/demo", "Orbax checkpoint / training workdir / official .pth",
                        flag_values=fv)
    flags.DEFINE_string("dataset", "synthetic", "benchmark: synthetic, lasot, lasot_ext, got10k_test, got10k_val, "
                        "trackingnet, uav, nfs, otb, avist, tnl2k, itb", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "benchmark root (default: config.data.data_dir for synthetic)",
                        flag_values=fv)
    flags.DEFINE_string("results_dir", None, "default: <checkpoint>/results/<dataset> (with --analyze_only: "
                        "runs/analysis/<dataset>)", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "sequences tracked together (default config.eval.batch_size)",
                         flag_values=fv)
    flags.DEFINE_enum("crop", None, ["host", "device"], "crop path (default config.eval.crop)", flag_values=fv)
    flags.DEFINE_float("threshold", None, "override the dataset's division threshold", flag_values=fv)
    flags.DEFINE_bool("retrack", False, "when --results_dir holds results of another model, threshold, crop or "
                      "config, delete them and track again (default: stop and say what differs)", flag_values=fv)
    flags.DEFINE_string("sequence_list", None, "file with the sequence names to evaluate", flag_values=fv)
    flags.DEFINE_string("vis_dir", None, "write an overlay video per sequence and token-division grids (grm_jax.viz) "
                        "into this folder; those sequences are tracked again", flag_values=fv)
    flags.DEFINE_list("vis_sequences", None, "sequence names to visualise (default: all)", flag_values=fv)
    flags.DEFINE_integer("vis_every", 10, "token grid every N frames of a visualised sequence", flag_values=fv)
    flags.DEFINE_bool("analyze_only", False, "only score existing result folders (positional arguments, DIR or "
                      "NAME=DIR) and write the ranked report", flag_values=fv)


def analyze(fv: flags.FlagValues, args: list[str]) -> int:
    """``--analyze_only``: the ranked report of the result folders named in ``args[1:]``."""
    config = fv.config
    sequences, _ = load_sequences(config, fv.dataset, fv.data_dir or config.data.data_dir, fv.sequence_list)
    dirs, names = report.parse_result_dirs(args[1:])
    out_dir = fv.results_dir or pathlib.Path("runs") / "analysis" / fv.dataset
    written = report.write_report(dirs, sequences, out_dir, fv.dataset, names)
    print(pathlib.Path(written["markdown"]).read_text())
    print(f"plots: {', '.join(v for k, v in written.items() if k not in ('markdown', 'summaries'))}")
    return 0


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Tracks and scores as the flags say; 1 if some sequences could not be tracked."""
    compilation_cache.enable()  # $GRM_JAX_CACHE ("off" to disable), else ~/.cache/grm_jax/xla
    if fv.analyze_only:
        return analyze(fv, args)
    cli.no_arguments(args)
    config = fv.config
    validate(config)
    distributed.initialize(config)  # config.train.distributed: the processes share the sequences
    if fv.threshold is not None:
        check_threshold(fv.threshold, "--threshold")
    checkpoint = pathlib.Path(fv.checkpoint)
    variables = load_checkpoint_variables(checkpoint, config, cli.config_given(fv))
    results_dir = fv.results_dir or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "results" / \
        fv.dataset
    recorder = None
    if fv.vis_dir:
        recorder = OverlayRecorder(fv.vis_dir, config.model.patch_size, every=fv.vis_every)
    out = evaluate(config, variables, fv.dataset, fv.data_dir or config.data.data_dir, results_dir,
                   batch_size=fv.batch_size or config.eval.batch_size, crop=fv.crop or config.eval.crop,
                   threshold=fv.threshold, sequence_list=fv.sequence_list, on_frame=recorder,
                   on_frame_sequences=fv.vis_sequences, on_mismatch="retrack" if fv.retrack else "error",
                   checkpoint=checkpoint)
    if recorder is not None:
        recorder.close()
        print(f"visualisations: {len(recorder.written)} files in {fv.vis_dir}")
    if "scores" in out:
        print(f"{fv.dataset} (threshold {out['threshold']}): "
              + ", ".join(f"{k} {v:.1f}" for k, v in out["scores"].items()))
        print(f"report: {out['report']}")
    else:
        print(f"results in {out['results_dir']}: {out.get('note', '')}")
    for problem in out["rejected"]:
        print(f"warning: not tracked: {problem}", file=sys.stderr)
    return 1 if out["rejected"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python eval.py [flags] [result folders]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__, config=DEFAULT_CONFIG, verbosity=True)


if __name__ == "__main__":
    sys.exit(main())
