"""What ``train.py`` does: open the configured datasets, train, then (optionally) evaluate the result."""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections

from grm_jax import distributed
from grm_jax.data.datasets import make_builder, prepare, synthetic_builder_config
from grm_jax.data.pipeline import make_train_batches
from grm_jax.data.source import DatasetSource
from grm_jax.evaluate.run import evaluate, evaluate_with_baselines, format_comparison
from grm_jax.models import build_model
from grm_jax.train.loop import initial_variables, train


def open_training_sources(config: ml_collections.ConfigDict) -> list:
    """One source per ``config.data.datasets`` name, from ``config.data.data_dir``.

    ``SYNTHETIC`` is generated and prepared on first use (``config.data.synthetic``); the real datasets must
    have been prepared with ``python -m grm_jax.data.datasets`` (nothing is downloaded).
    """
    sources = []
    for name in config.data.datasets:
        if name == "SYNTHETIC":
            builder = make_builder("synthetic_tracking", config.data.data_dir,
                                   config=synthetic_builder_config(config))
            # One process prepares the set (a shared disk: once); the others wait for it.
            distributed.main_first("grm_jax_prepare_synthetic", lambda builder=builder: prepare(builder, None))
            sources.append(DatasetSource(builder.data_dir, "train"))
        else:
            sources.append(DatasetSource.open(name, config.data.data_dir))
    return sources


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its checkpoints); evaluate if ``config.eval.after_training``.

    A run stopped by SIGTERM (preemption) saves its checkpoint and does nothing else: ``out["preempted"]`` is
    True and no evaluation runs (it would score a half-trained model).
    """
    workdir = pathlib.Path(workdir)
    sources = open_training_sources(config)
    result = train(config, workdir, lambda start: make_train_batches(config, sources, start))
    out = {"train": result.history[-1] if result.history else {}, "workdir": str(workdir),
           "preempted": result.preempted, "step": int(result.state["step"])}
    if config.eval.after_training and not result.preempted:
        variables = {"params": result.state["params"], "batch_stats": result.state["batch_stats"]}
        # The folder belongs to this workdir, whose model changes with every run: old results are tracked again.
        common = dict(batch_size=config.eval.batch_size, crop=config.eval.crop,
                      max_sequences=config.eval.max_sequences or None, checkpoint=workdir,
                      step=int(result.state["step"]))
        if config.eval.baselines and jax.process_count() == 1:
            model = build_model(config)
            initial = initial_variables(config, model)  # the weights training started from
            evaluation = evaluate_with_baselines(config, variables, initial, config.eval.dataset,
                                                 config.data.data_dir, workdir / "results", **common)
            evaluation["comparison"] = format_comparison(evaluation, f"trained (step {common['step']})")
            (workdir / "results" / f"comparison_{config.eval.dataset}.md").write_text(
                evaluation["comparison"] + "\n")
        else:
            evaluation = evaluate(config, variables, config.eval.dataset, config.data.data_dir,
                                  workdir / "results" / config.eval.dataset, on_mismatch="retrack", **common)
        out["eval"] = evaluation
        if jax.process_index() != 0:  # process 0 reports for all (grm_jax.evaluate.run.evaluate)
            return out
        for problem in evaluation["rejected"]:
            print(f"warning: not tracked: {problem}")
        (workdir / "eval_summary.json").write_text(json.dumps(
            {k: v for k, v in evaluation.items() if k != "plots"}, indent=1, default=str))
    return out
