"""Official GRM state dict ↔ Flax variables (``params`` + ``batch_stats``), by one naming rule in both directions.

Rule (docs/model.md#conversion-rule): a numeric key component joins the name before it
(``backbone.blocks.3.attn.qkv.weight`` → ``backbone/blocks_3/attn/qkv/kernel``,
``box_head.conv1_ctr.1.running_var`` → ``batch_stats: box_head/conv1_ctr_1/var``), and the leaf maps as:

| PyTorch leaf | Flax leaf | array |
|---|---|---|
| ``weight`` of a Linear (out,in) | ``kernel`` (in,out) | transpose |
| ``weight`` of a Conv2d (O,I,kh,kw) | ``kernel`` (kh,kw,I,O) | transpose (2,3,1,0) |
| ``weight`` of a LayerNorm / BatchNorm (C,) | ``scale`` | as is |
| ``bias`` | ``bias`` | as is |
| ``running_mean`` / ``running_var`` / ``num_batches_tracked`` | ``batch_stats`` ``mean`` / ``var`` / same | as is |
| ``cls_token``, ``pos_embed``, ``pos_embed_x``, ``pos_embed_z`` | same name | as is |
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

_BATCH_STATS = {"running_mean": "mean", "running_var": "var", "num_batches_tracked": "num_batches_tracked"}
_BATCH_STATS_BACK = {v: k for k, v in _BATCH_STATS.items()}
_INDEXED = re.compile(r"^(.*)_(\d+)$")


class StateDictMismatchError(ValueError):
    """A state dict does not fit the model: lists every missing, unexpected and mis-shaped key."""


def torch_key_to_flax(key: str, ndim: int) -> tuple[str, tuple[str, ...]]:
    """``(collection, path)`` of the Flax variable holding official state-dict entry ``key`` of rank ``ndim``."""
    parts: list[str] = []
    for part in key.split("."):
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    *module, leaf = parts
    if leaf in _BATCH_STATS:
        return "batch_stats", (*module, _BATCH_STATS[leaf])
    if leaf == "weight":
        return "params", (*module, "kernel" if ndim >= 2 else "scale")
    return "params", (*module, leaf)


def flax_path_to_torch(collection: str, path: tuple[str, ...]) -> str:
    """Inverse of :func:`torch_key_to_flax`."""
    *module, leaf = path
    if collection == "batch_stats":
        leaf = _BATCH_STATS_BACK[leaf]
    elif leaf in ("kernel", "scale"):
        leaf = "weight"
    parts = []
    for name in module:
        match = _INDEXED.match(name)
        parts.extend([match.group(1), match.group(2)] if match else [name])
    return ".".join(parts + [leaf])


def torch_to_flax_array(key: str, array: np.ndarray) -> np.ndarray:
    """Re-lay one official tensor for Flax: Linear (out,in) → (in,out); Conv2d (O,I,kh,kw) → (kh,kw,I,O)."""
    array = np.asarray(array)
    if key.endswith(".weight") and array.ndim == 2:
        return array.T
    if key.endswith(".weight") and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def _torch_shape(key: str, flax_shape: tuple) -> tuple:
    """The official layout's shape of a Flax variable of ``flax_shape`` (for error messages)."""
    return tuple(flax_to_torch_array(key, np.empty(flax_shape, np.uint8)).shape)


def flax_to_torch_array(key: str, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`torch_to_flax_array`."""
    array = np.asarray(array)
    if key.endswith(".weight") and array.ndim == 2:
        return array.T
    if key.endswith(".weight") and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def unwrap_checkpoint(obj: Mapping) -> Mapping:
    """A GRM training checkpoint (``.pth.tar``) keeps the state dict under ``net``; a bare state dict is itself."""
    if "net" in obj and isinstance(obj["net"], Mapping):
        return obj["net"]
    return obj


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], reference: Mapping) -> dict:
    """Official state dict → Flax variables shaped like ``reference`` (e.g. ``jax.eval_shape`` of ``model.init``).

    Raises :class:`StateDictMismatchError` naming every missing, unexpected and mis-shaped key.
    Values keep their checkpoint dtype except that they are cast to the reference dtype.
    """
    flat_ref = {
        (collection, path): leaf
        for collection in ("params", "batch_stats") if collection in reference
        for path, leaf in traverse_util.flatten_dict(dict(reference[collection])).items()
    }
    out: dict = {}
    seen, unexpected, mis_shaped = set(), [], []
    for key, value in state_dict.items():
        value = np.asarray(value)
        target = torch_key_to_flax(key, value.ndim)
        if target not in flat_ref:
            unexpected.append(key)
            continue
        seen.add(target)
        ref = flat_ref[target]
        array = torch_to_flax_array(key, value)
        if tuple(array.shape) != tuple(ref.shape):
            mis_shaped.append(f"{key}: checkpoint {tuple(value.shape)} vs model {_torch_shape(key, ref.shape)}")
            continue
        out[target] = array.astype(ref.dtype)
    missing = [flax_path_to_torch(*target) for target in flat_ref if target not in seen]
    if missing or unexpected or mis_shaped:
        lines = []
        if missing:
            lines.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            lines.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if mis_shaped:
            lines.append(f"shape mismatches ({len(mis_shaped)}): {mis_shaped}")
        raise StateDictMismatchError("state dict does not fit the model:\n  " + "\n  ".join(lines))
    variables: dict = {}
    for (collection, path), array in out.items():
        variables.setdefault(collection, {})[path] = array
    return {collection: traverse_util.unflatten_dict(flat) for collection, flat in variables.items()}


def _official_rank(key: str) -> tuple:
    """Sort key reproducing the official state-dict order (docs/model.md#state-dict-layout): globals, patch_embed,
    blocks, norm, head."""
    parts = key.split(".")
    top_order = ["cls_token", "pos_embed", "pos_embed_x", "pos_embed_z", "patch_embed", "blocks", "norm"]
    if parts[0] == "backbone":
        group = top_order.index(parts[1]) if parts[1] in top_order else len(top_order)
        if parts[1] == "blocks":
            block_order = ["norm1", "attn", "norm2", "mlp"]
            sub = ["qkv", "proj", "divide_predict", "fc1", "fc2"]
            inner = parts[3:]
            return (0, group, int(parts[2]), block_order.index(inner[0]),
                    sub.index(inner[1]) if len(inner) > 2 and inner[1] in sub else 0,
                    int(inner[2]) if len(inner) > 3 and inner[2].isdigit() else 0, _leaf_rank(parts[-1]))
        return (0, group, 0, 0, 0, 0, _leaf_rank(parts[-1]))
    match = re.match(r"conv(\d)_(ctr|offset|size)", parts[1])
    branch = ["ctr", "offset", "size"].index(match.group(2))
    sub_index = int(parts[2]) if parts[2].isdigit() else 0
    return (1, branch, int(match.group(1)), sub_index, 0, 0, _leaf_rank(parts[-1]))


def _leaf_rank(leaf: str) -> int:
    order = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    return order.index(leaf) if leaf in order else -1


def variables_to_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """Flax variables → official state dict (NumPy arrays, official order and layouts).

    ``num_batches_tracked`` is written as int64 (PyTorch's dtype); everything else keeps its dtype.
    """
    entries = {}
    for collection in ("params", "batch_stats"):
        if collection not in variables:
            continue
        for path, leaf in traverse_util.flatten_dict(dict(variables[collection])).items():
            key = flax_path_to_torch(collection, path)
            array = flax_to_torch_array(key, np.asarray(leaf))
            if key.endswith("num_batches_tracked"):
                array = array.astype(np.int64)
            entries[key] = np.asarray(array, order="C")
    return {key: entries[key] for key in sorted(entries, key=_official_rank)}
