"""Model checkpoints on disk: Orbax, with the config they belong to recorded beside the weights.

Layout (an Orbax ``CheckpointManager`` directory)::

    DIR/<step>/state/    params + batch_stats (StandardSave; training adds its own items beside)
    DIR/<step>/config/   the experiment config as JSON

A converted PyTorch checkpoint is saved as step 0. ``eval.py``, the tracker and the conversion tools read the
latest step with :func:`load_variables`.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from grm_jax.config import base_config


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, empty or cannot be restored (message names the path)."""


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


def save_variables(directory, variables: dict, config: ml_collections.ConfigDict, step: int = 0) -> pathlib.Path:
    """Save ``{'params', 'batch_stats'}`` and ``config`` as ``directory/<step>``; returns that path."""
    directory = pathlib.Path(directory).absolute()
    tree = {name: variables[name] for name in ("params", "batch_stats") if name in variables}
    tree = _numpy_tree(tree)
    options = ocp.CheckpointManagerOptions(create=True, max_to_keep=None)
    with ocp.CheckpointManager(directory, options=options) as manager:
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                   config=ocp.args.JsonSave(_to_json(config))), force=True)
        manager.wait_until_finished()
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
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                     config=ocp.args.JsonRestore()))
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
