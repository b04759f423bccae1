"""Whole-checkpoint conversions: official GRM files ↔ Flax variables, and backbone initialisation from MAE / DeiT.

Reading never needs torch (``pth_io`` rebuilds tensors with a restricted unpickler); files are chosen by extension
(``.pth``, ``.pth.tar``, ``.pt``, ``.bin``, ``.safetensors``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from grm_jax.convert import pth_io
from grm_jax.convert.pos_embed import derive_track_tables
from grm_jax.convert.state_dict import (
    StateDictMismatchError,
    state_dict_to_variables,
    torch_key_to_flax,
    torch_to_flax_array,
    unwrap_checkpoint,
    variables_to_state_dict,
)
from grm_jax.models import build_model, example_inputs, host_init

# Official pretrained backbones accepted by build_grm (docs/model.md#pretrained-backbones), with their
# patch_start_index.
PRETRAINED_START_INDEX = {
    "mae_pretrain_vit_base.pth": 1,
    "mae_pretrain_vit_large.pth": 1,
    "deit_base_patch16_224-b5f2ef4d.pth": 1,
    "deit_base_distilled_patch16_224-df68dfff.pth": 2,
}


def variable_shapes(config: ml_collections.ConfigDict) -> dict:
    """``jax.eval_shape`` of the model's variables for ``config`` (no memory, no compute)."""
    model = build_model(config)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example_inputs(config)))


def init_variables(config: ml_collections.ConfigDict, seed: int = 0) -> dict:
    """Freshly initialised variables (the initialisers of docs/model.md#initialisation) for ``config``."""
    model = build_model(config)
    return host_init(model, *example_inputs(config), seed=seed)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The flat state dict in ``path`` (a GRM ``.pth.tar`` is unwrapped from ``net``), as NumPy arrays.

    A training checkpoint also pickles settings/stats objects; they are read as inert placeholders
    (``allow_skip``: nothing is imported or run) and dropped with everything outside ``net``.
    """
    obj = pth_io.load_checkpoint_file(path, allow_skip=True)
    if not isinstance(obj, Mapping):
        raise pth_io.CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = unwrap_checkpoint(obj)
    bad = [key for key, value in state.items() if not isinstance(value, np.ndarray)]
    if bad:
        raise pth_io.CheckpointFormatError(f"{path}: entries that are not tensors: {bad[:10]}")
    return dict(state)


def official_to_variables(path, config: ml_collections.ConfigDict) -> dict:
    """Load an official GRM checkpoint into Flax variables for ``config``.

    A checkpoint of another architecture (e.g. ViT-L weights with a ViT-B config) fails with
    :class:`StateDictMismatchError` naming the offending keys and both shapes.
    """
    state = read_state_dict(path)
    try:
        return state_dict_to_variables(state, variable_shapes(config))
    except StateDictMismatchError as err:
        raise StateDictMismatchError(f"{path} does not fit config model {config.model.backbone} "
                                     f"(embed {config.model.embed_dim}, depth {config.model.depth}, search "
                                     f"{config.model.search_size} px): {err}") from None


def write_state_dict(variables: Mapping, path) -> pathlib.Path:
    """Write the official state dict of ``variables`` to ``path``: ``.safetensors``, else torch's ``.pth`` format.

    The ``.pth`` holds exactly the official keys, shapes and dtypes (``num_batches_tracked`` int64) and loads into
    the official model with ``strict=True``.
    """
    path = pathlib.Path(path)
    state = variables_to_state_dict(variables)
    if path.suffix == ".safetensors":
        pth_io.save_safetensors(state, path)
    else:
        pth_io.save_pth(state, path)
    return path


@dataclasses.dataclass
class PretrainedReport:
    """What :func:`load_pretrained_backbone` did, for the log."""

    loaded: list[str]
    ignored: list[str]
    kept_fresh: list[str]
    patch_start_index: int


def load_pretrained_backbone(variables: Mapping, path, config: ml_collections.ConfigDict,
                             patch_start_index: int | None = None) -> tuple[dict, PretrainedReport]:
    """Initialise the backbone from an ImageNet checkpoint (MAE ``model`` entry or DeiT), as the official build.

    Order (official ``build_grm``; docs/model.md#initialisation): the checkpoint overwrites patch_embed, cls_token,
    pos_embed, the blocks' norms / qkv / proj / mlp and the final norm (non-strict: its other entries, e.g. DeiT's
    ``head`` or ``dist_token``, are ignored); ``pos_embed_z`` / ``pos_embed_x`` are then re-derived from its
    ``pos_embed`` by PyTorch's bicubic resize (``finetune_track``); the division MLPs and the head keep their fresh
    initialisation.
    For the distilled DeiT (two leading tokens, ``patch_start_index`` 2) the model's unused ``pos_embed`` keeps the
    cls row and the patch rows (the distillation row has no place in GRM's state dict).
    """
    path = pathlib.Path(path)
    obj = pth_io.load_checkpoint_file(path, allow_skip=True)
    state = obj.get("model", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping):
        raise pth_io.CheckpointFormatError(f"{path}: no 'model' state dict inside")
    if patch_start_index is None:
        patch_start_index = PRETRAINED_START_INDEX.get(path.name, 2 if "dist_token" in state else 1)

    m = config.model
    flat = {c: traverse_util.flatten_dict(dict(variables[c])) for c in variables}
    params = dict(flat["params"])
    loaded, ignored, mismatched = [], [], []
    for key, value in state.items():
        value = np.asarray(value)
        if key == "pos_embed" and patch_start_index == 2:
            value = np.concatenate([value[:, :1], value[:, 2:]], axis=1)
        collection, target = torch_key_to_flax(f"backbone.{key}", value.ndim)
        if collection != "params" or target not in params:
            ignored.append(key)
            continue
        array = torch_to_flax_array(f"backbone.{key}", value)
        if array.shape != tuple(params[target].shape):
            mismatched.append(f"{key}: checkpoint {value.shape} vs model {tuple(params[target].shape)}")
            continue
        params[target] = array.astype(params[target].dtype)
        loaded.append(key)
    if mismatched:
        raise StateDictMismatchError(f"{path} does not fit config model {m.backbone}: {mismatched}")
    if "pos_embed" not in state:
        raise pth_io.CheckpointFormatError(f"{path}: has no pos_embed to derive pos_embed_x/pos_embed_z from")

    for name, table in derive_track_tables(state["pos_embed"], m, patch_start_index).items():
        params[("backbone", name)] = table
    fresh = [".".join(p) for p in params if p[0] == "box_head" or any(s.startswith("divide_predict") for s in p)]
    out = {c: traverse_util.unflatten_dict(params if c == "params" else flat[c]) for c in flat}
    return out, PretrainedReport(loaded=loaded, ignored=ignored, kept_fresh=fresh,
                                 patch_start_index=patch_start_index)
