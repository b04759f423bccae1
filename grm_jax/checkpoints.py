"""Checkpoints on disk, one module: the Orbax layout (written and read here only), training checkpoints (keep policy,
damaged-checkpoint recovery, several processes) and loading model variables from any checkpoint a user names.

Layout (an Orbax ``CheckpointManager`` directory)::

    DIR/<step>/state/    params + batch_stats; a training checkpoint adds step, opt_state and per-device batch
                         statistics beside them
    DIR/<step>/config/   the experiment config as JSON

A converted PyTorch checkpoint is saved as step 0 (:func:`save_variables`); a training run keeps its checkpoints in
``<workdir>/checkpoints`` (:func:`make_manager`, :func:`save_train_state`). :func:`load_variables` reads the latest
step of either, so ``eval.py`` takes a training run directly; :func:`load_checkpoint_variables` also takes an
official ``.pth``/``.pth.tar`` file.

Saves are atomic (Orbax writes to a temporary directory and renames). :func:`restore_latest` walks back from the
latest step when a checkpoint is damaged, reporting each one it skips and moving it aside to
``<step>.damaged-<time>``.

On several processes every process calls :func:`save_train_state` and :func:`restore_latest` with the same tree of
global arrays (Orbax's multi-host protocol): each process writes and reads only the shards it holds (a replicated
array is written once), and no host gathers the state.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from grm_jax.config import base_config
from grm_jax.convert.official import official_to_variables
from grm_jax.errors import CheckpointError

__all__ = ["CheckpointError", "RUN_OPTIONS", "adopt_model_config", "config_from_json", "load_checkpoint_variables",
           "load_variables", "make_manager", "model_config_differences", "restore_latest", "save_train_state",
           "save_variables", "silence_closed_loop_callbacks"]

# ----------------------------------------------------------------------------------------------------
# The layout: the only code that writes or names the items of a step


def _to_json(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON types (tuples become lists; :func:`config_from_json` turns them back)."""
    return json.loads(config.to_json_best_effort())


def config_from_json(data: dict) -> ml_collections.ConfigDict:
    """Inverse of the JSON record: lists back to tuples (configs hold tuples), locked like ``base_config()``.

    Keys that ``base_config()`` has and the record lacks (a checkpoint written before they existed) take their
    defaults, which are the behaviour that checkpoint was made with.
    """

    def tuples(value):
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        return value

    def merged(defaults, recorded):
        out = dict(recorded)
        for key, value in defaults.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = merged(value, out[key])
        return out

    defaults = tuples(json.loads(base_config().to_json_best_effort()))
    config = ml_collections.ConfigDict(merged(defaults, tuples(data)))
    config.lock()
    return config


def _write_step(manager: ocp.CheckpointManager, step: int, tree: dict, config: ml_collections.ConfigDict) -> None:
    """Write ``DIR/<step>/state`` (``tree``) and ``DIR/<step>/config`` and wait until they are on disk; on several
    processes every process calls it."""
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                               config=ocp.args.JsonSave(_to_json(config))), force=True)
    manager.wait_until_finished()


def _read_step(manager: ocp.CheckpointManager, step: int, abstract_state=None, *, with_config: bool) -> dict:
    """``{'state': ..., 'config': ...}`` of ``DIR/<step>`` (``state`` in ``abstract_state``'s structure when given;
    ``config`` only ``with_config``)."""
    items = dict(state=ocp.args.StandardRestore(abstract_state))
    if with_config:
        items["config"] = ocp.args.JsonRestore()
    return manager.restore(step, args=ocp.args.Composite(**items))


# ----------------------------------------------------------------------------------------------------
# Model variables


def save_variables(directory, variables: dict, config: ml_collections.ConfigDict, step: int = 0) -> pathlib.Path:
    """Save ``{'params', 'batch_stats'}`` and ``config`` as ``directory/<step>``; returns that path."""
    directory = pathlib.Path(directory).absolute()
    tree = {name: variables[name] for name in ("params", "batch_stats") if name in variables}
    options = ocp.CheckpointManagerOptions(create=True, max_to_keep=None)
    with ocp.CheckpointManager(directory, options=options) as manager:
        _write_step(manager, step, _numpy_tree(tree), config)
    return directory / str(step)


def load_variables(directory, step: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
    """Restore ``(variables, config)`` from ``directory`` (latest step unless ``step`` is given)."""
    directory = pathlib.Path(directory).absolute()
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"checkpoint directory {directory} holds no finished checkpoint")
        try:
            restored = _read_step(manager, step, with_config=True)
        except Exception as err:  # Orbax raises many types for a damaged directory; name the path either way.
            raise CheckpointError(f"cannot restore checkpoint {directory / str(step)}: {err}") from err
    state = restored["state"]
    variables = {name: jax.tree_util.tree_map(_process_local, state[name])
                 for name in ("params", "batch_stats") if name in state}
    return variables, config_from_json(restored["config"])


def _process_local(x):
    """A restored leaf as an array this process can use: on several processes Orbax restores replicated arrays over
    every process's devices, and this process's copy is its first shard."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise CheckpointError(f"a model variable of shape {x.shape} is sharded across processes")
        return x.addressable_shards[0].data
    return x


def _numpy_tree(tree):
    if isinstance(tree, dict):
        return {k: _numpy_tree(v) for k, v in tree.items()}
    return np.asarray(tree)


def load_checkpoint_variables(path, config, config_given: bool = True) -> dict:
    """Model variables from an official ``.pth``/``.pth.tar`` file (mapped with ``config``) or an Orbax directory
    (a training workdir, its ``checkpoints/`` or a converted checkpoint; latest step).

    An Orbax checkpoint records the config it was trained with. Where its ``config.model`` differs from
    ``config.model``: with ``config_given=False`` (no ``--config`` on the command line) ``config.model`` takes the
    checkpoint's values (in place); with ``config_given=True`` a ``ValueError`` names each difference.
    """
    path = pathlib.Path(path)
    if path.is_file():
        return official_to_variables(path, config)
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            variables, stored = load_variables(candidate)
            adopt_model_config(config, stored, candidate, config_given)
            return variables
    raise FileNotFoundError(f"no checkpoint in {path} (expected an Orbax directory or a .pth file)")


#: Model settings that do not change the weights: the run's own choice, never taken from a checkpoint.
RUN_OPTIONS = ("attention", "dtype", "drop_path_rate", "pretrain_file")


def model_config_differences(config, stored) -> dict:
    """``{key: (config's value, stored value)}`` for the ``model`` keys (but :data:`RUN_OPTIONS`) where the two
    configs differ."""
    ours, theirs = config.model.to_dict(), stored.model.to_dict() if "model" in stored else {}
    return {key: (ours.get(key), theirs[key]) for key in theirs
            if key in ours and key not in RUN_OPTIONS and _differ(ours[key], theirs[key])}


def _differ(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) != list(b)
    return a != b


def adopt_model_config(config, stored, where, config_given: bool) -> None:
    """See :func:`load_checkpoint_variables`."""
    differences = model_config_differences(config, stored)
    if not differences:
        return
    listed = ", ".join(f"model.{k} = {theirs!r} (--config: {ours!r})" for k, (ours, theirs) in differences.items())
    if config_given:
        raise ValueError(f"checkpoint {where} was trained with another model config: {listed}. Drop --config (and "
                         f"--config.model overrides) to use the checkpoint's own, or pass the config it was trained "
                         f"with")
    for key, (_, theirs) in differences.items():
        config.model[key] = tuple(theirs) if isinstance(config.model[key], tuple) else theirs
    print(f"using the checkpoint's model config: {listed}")


# ----------------------------------------------------------------------------------------------------
# Training checkpoints: the whole train state (step, params, batch_stats of device 0, opt_state, per-device batch
# statistics) in <workdir>/checkpoints


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


def save_train_state(manager: ocp.CheckpointManager, state_tree: dict, config: ml_collections.ConfigDict) -> None:
    """Save ``state_tree`` (global arrays, or host NumPy on one process) at its ``step``; every process calls it."""
    tree = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), state_tree)
    _write_step(manager, _step_of(state_tree), tree, config)


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
            return _read_step(manager, step, abstract, with_config=False)["state"], warnings
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
