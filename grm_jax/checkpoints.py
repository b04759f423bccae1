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
``<step>.damaged-<time>``. A whole checkpoint that does not fit the run (another model or optimiser config) is not
damage: it is refused with an error that names the keys, and nothing is moved. Per-device BatchNorm statistics
written on another device count are read past (every device then starts from device 0's, see
``grm_jax/train/loop.py``).

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
from grm_jax.distributed import first_local_shard
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


def _stored_state(manager: ocp.CheckpointManager, step: int) -> dict:
    """The tree of ``DIR/<step>/state`` as Orbax array metadata (shapes, dtypes; no array is read)."""
    return manager.item_metadata(step)["state"].tree


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
        return first_local_shard(x)
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
    return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints", options=options,
                                 item_handlers=dict(state=ocp.StandardCheckpointHandler(),
                                                    config=ocp.JsonCheckpointHandler()))


def _step_of(tree: dict) -> int:
    step = tree["step"]
    if isinstance(step, jax.Array):  # a replicated global array: this process's copy
        return int(np.asarray(first_local_shard(step)))
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


def restore_latest(manager: ocp.CheckpointManager, target: dict,
                   optional: tuple[str, ...] = ()) -> tuple[dict | None, list[str], list[str]]:
    """The newest checkpoint that restores into ``target``'s structure: ``(tree, warnings, notes)``.

    ``target``: arrays, or ``jax.ShapeDtypeStruct`` leaves with their shardings (only shapes, dtypes and shardings
    are read, so a run can pass its state's abstract form instead of materialising it).

    ``warnings``: one per damaged checkpoint skipped (moved aside to ``<step>.damaged-<time>``). ``optional``: top
    keys of ``target`` that a checkpoint may lack or hold with other shapes (per-device statistics written on
    another device count); such a key is left out of the returned tree, with a line in ``notes``. Any other
    difference between the checkpoint's arrays and ``target``'s (another model or optimiser config) is not damage:
    :class:`CheckpointError` names the keys, and nothing is moved.
    """
    warnings, notes = [], []
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    replicated = _replicated_sharding(target)
    for step in sorted(manager.all_steps(), reverse=True):
        directory = manager.directory / str(step)
        try:
            stored = _stored_state(manager, step)
        except Exception as err:  # unreadable metadata: a damaged checkpoint
            warnings.append(_move_damaged(manager, step, err))
            continue
        fitted, dropped = _fit_optional(stored, abstract, optional, replicated)
        differences = _differences(stored, fitted)
        if differences:
            more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
            raise CheckpointError(f"checkpoint {directory} does not fit this run's train state (written with another "
                                  f"model or optimiser config?): {'; '.join(differences[:5])}{more}. Train in another "
                                  f"workdir, or with the config that wrote it")
        try:
            state = _read_step(manager, step, fitted, with_config=False)["state"]
        except Exception as err:  # a truncated or half-deleted checkpoint raises from deep inside Orbax
            warnings.append(_move_damaged(manager, step, err))
            continue
        for key, why in dropped.items():
            state.pop(key, None)
            notes.append(f"checkpoint {directory}: {why}; restored without it")
        return state, warnings, notes
    return None, warnings, notes


def _move_damaged(manager: ocp.CheckpointManager, step: int, err: Exception) -> str:
    """Move ``DIR/<step>`` aside to ``<step>.damaged-<time>`` (every process calls it) and say so."""
    silence_closed_loop_callbacks()
    damaged = manager.directory / str(step)
    # Named by the damaged folder's own time, which every process reads the same before process 0 moves it.
    kept = damaged.with_name(f"{step}.damaged-{int(os.stat(str(damaged)).st_mtime)}")
    ocp.multihost.sync_global_processes(f"grm_jax_damaged_{step}_named")
    if jax.process_index() == 0:
        damaged.rename(kept)  # kept for inspection, out of the way of the step's next save
    ocp.multihost.sync_global_processes(f"grm_jax_damaged_{step}_moved")
    manager.reload()
    cause = " ".join(str(err).split())
    return (f"checkpoint {damaged} cannot be restored ({type(err).__name__}: {cause}); moved to {kept.name}; "
            f"trying the previous one")


def _replicated_sharding(target: dict):
    """A sharding that places a whole array on every device of ``target``'s run (one of its replicated leaves')."""
    for leaf in jax.tree_util.tree_leaves(target):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)) and sharding is not None and (
                sharding.is_fully_replicated):
            return sharding
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _fit_optional(stored: dict, abstract: dict, optional, replicated) -> tuple[dict, dict]:
    """``abstract`` with each ``optional`` key made to read what the checkpoint holds: ``(fitted, dropped)``.

    A key the checkpoint lacks is removed; one it holds with other shapes (or that ``abstract`` lacks) is read
    whole onto every device, in its stored shapes, and dropped after the restore (Orbax restores a tree whole).
    ``dropped`` maps each such key to why.
    """
    fitted, dropped = dict(abstract), {}
    for key in optional:
        if key not in stored:
            if fitted.pop(key, None) is not None:
                dropped[key] = f"it holds no {key!r}"
            continue
        if key in fitted and _shapes(stored[key]) == _shapes(fitted[key]):
            continue
        ours = f"this run has {_leading_dims(fitted[key])}" if key in fitted else "this run keeps none"
        dropped[key] = f"{key!r} is stored for {_leading_dims(stored[key])} and {ours}"
        fitted[key] = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype, sharding=replicated), stored[key])
    return fitted, dropped


def _shapes(tree) -> dict:
    """``{'a/b/0/c': (shape, dtype)}`` of a tree of arrays, shape structs or Orbax array metadata (which stores
    named tuples, such as optax's states, as dicts and lists: the path names are compared, not the node types).
    Orbax's own ``tree.serialize_tree(..., keep_empty_nodes=False)`` + ``to_flat_dict`` fails on an optax chain
    whose empty states leave gaps in a list (orbax-checkpoint 0.12.8), hence the paths are named here."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(_key_name(k)) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype)) for path, leaf in flat}


def _key_name(key):
    for attribute in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return key


def _leading_dims(tree) -> str:
    """'N devices': the leading axis of a per-device tree's first leaf."""
    return f"{jax.tree_util.tree_leaves(tree)[0].shape[0]} devices"


def _differences(stored: dict, abstract: dict) -> list[str]:
    """Where the checkpoint's arrays and the run's differ: keys on one side only, other shapes or dtypes."""
    ours, theirs = _shapes(abstract), _shapes(stored)
    out = [f"{path} missing from the checkpoint" for path in ours if path not in theirs]
    out += [f"{path} not in this run's state" for path in theirs if path not in ours]
    out += [f"{path} stored {theirs[path][0]} {theirs[path][1]}, this run {ours[path][0]} {ours[path][1]}"
            for path in ours if path in theirs and theirs[path] != ours[path]]
    return out
