"""Training checkpoints: an Orbax ``CheckpointManager`` holding the whole train state and the config.

Layout per step (readable by :func:`grm_jax.checkpoints.load_variables`, so ``eval.py`` takes a training run
directory directly)::

    DIR/<step>/state/   step, params, batch_stats (device 0), opt_state, and per-device batch statistics
    DIR/<step>/config/  the config as JSON

Saves are atomic (Orbax writes to a temporary directory and renames). Restoring walks back from the latest step
when a checkpoint is damaged, reporting each one it skips and moving it aside to ``<step>.damaged-<time>``.

On several processes every process calls :func:`save` and :func:`restore_latest` with the same tree of global
arrays (Orbax's multi-host protocol): each process writes and reads only the shards it holds (a replicated array
is written once), and no host gathers the state.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from grm_jax.checkpoints import _to_json


def make_manager(workdir, config: ml_collections.ConfigDict, steps_per_epoch: int) -> ocp.CheckpointManager:
    """Keeps the last ``config.train.keep_last`` checkpoints plus one every ``keep_every_epochs`` epochs."""
    t = config.train
    options = ocp.CheckpointManagerOptions(
        create=True, max_to_keep=t.keep_last,
        keep_period=t.keep_every_epochs * steps_per_epoch if t.keep_every_epochs else None,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints", options=options)


def _step_of(tree: dict) -> int:
    step = tree["step"]
    if isinstance(step, jax.Array):  # a replicated global array: this process's copy
        return int(np.asarray(step.addressable_shards[0].data))
    return int(step)


def save(manager: ocp.CheckpointManager, state_tree: dict, config: ml_collections.ConfigDict) -> None:
    """Save ``state_tree`` (global arrays, or host NumPy on one process) at its ``step``; every process calls it."""
    step = _step_of(state_tree)
    tree = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), state_tree)
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                               config=ocp.args.JsonSave(_to_json(config))), force=True)
    manager.wait_until_finished()


def _is_closed_loop_error(exc) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def silence_closed_loop_callbacks() -> None:
    """Drop the ``RuntimeError: Event loop is closed`` reports of a failed restore, nothing else.

    When Orbax's restore fails, TensorStore reads still in flight complete later and call back into the asyncio
    loop that Orbax has already closed; each callback's error is printed as a traceback through
    ``sys.excepthook`` / ``sys.unraisablehook`` (hundreds of them, seen 324–806 per damaged checkpoint). They
    say nothing about the checkpoint (the warning does); this filter, installed once, drops exactly them.
    """
    if getattr(sys.excepthook, "_grm_jax_filter", False):
        return
    previous_except, previous_unraisable = sys.excepthook, sys.unraisablehook

    def excepthook(exc_type, exc, tb):
        if not _is_closed_loop_error(exc):
            previous_except(exc_type, exc, tb)

    def unraisablehook(unraisable):
        if not _is_closed_loop_error(unraisable.exc_value):
            previous_unraisable(unraisable)

    excepthook._grm_jax_filter = True
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def restore_latest(manager: ocp.CheckpointManager, target: dict) -> tuple[dict | None, list[str]]:
    """The newest checkpoint that restores into ``target``'s structure, and a warning per damaged one skipped."""
    warnings = []
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            return restored["state"], warnings
        except Exception as err:  # a truncated or half-deleted checkpoint raises from deep inside Orbax
            silence_closed_loop_callbacks()
            damaged = manager.directory / str(step)
            # Named by the damaged folder's own time, which every process reads the same before process 0 moves it.
            kept = damaged.with_name(f"{step}.damaged-{int(os.stat(str(damaged)).st_mtime)}")
            ocp.multihost.sync_global_processes(f"grm_jax_damaged_{step}_named")
            if jax.process_index() == 0:
                damaged.rename(kept)  # kept for inspection, out of the way of the step's next save
            ocp.multihost.sync_global_processes(f"grm_jax_damaged_{step}_moved")
            cause = " ".join(str(err).split())
            warnings.append(f"checkpoint {damaged} cannot be restored ({type(err).__name__}: {cause}); moved to "
                            f"{kept.name}; trying the previous one")
            manager.reload()
    return None, warnings
