"""The GRM model: template + search images → ViT with generalized relation modeling → CENTER head → box.

``GRM.__call__`` returns a dict (NHWC maps):

| key | shape | meaning |
|---|---|---|
| ``pred_boxes`` | (B,1,4) | normalised (cx,cy,w,h) in the search crop, decoded at the raw score map's maximum |
| ``score_map`` / ``size_map`` / ``offset_map`` | (B,S,S,1) / (B,S,S,2) / (B,S,S,2) | head outputs (docs/model.md) |
| ``backbone_out`` | (B, Nz+Ns, D) | tokens after the final LayerNorm |
| ``divide_logp`` | (L−1, B, Ns, 2) | per division layer, log-probabilities (class 1 = interacts with template) |
| ``decisions`` | (L−1, B, Ns, 2) | per division layer, the one-hot choice (straight-through in training) |
| ``interaction_ratio`` | (B, L−1) | mean over search tokens of ``decisions[..., 1]`` (the official ``decisions``) |

:func:`to_official_layout` maps this dict to the official NCHW tensors, in one place.
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from grm_jax import config as config_lib
from grm_jax.models.head import CenterHead, decode_boxes
from grm_jax.models.vit import VisionTransformer

Array = Any
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class GRM(nn.Module):
    """GRM tracker network (docs/model.md). Build it from a config with :func:`build_model`."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_size: int = 16
    pos_embed_grid: int = 14
    template_size: int = 128
    search_size: int = 256
    drop_path_rate: float = 0.1
    tgt_type: str = "allmax"
    divide_hidden: tuple[int, int] = (384, 192)
    head_channels: int = 256
    bn_axis_name: str | None = None
    attention: str = "masked"  # or "fused" (inference only; see grm_jax/models/relation.py)
    remat: bool = False  # per-block rematerialisation in training (config.train.remat = "block")
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    def _check_inputs(self, template, search, template_mask, gumbel_noise):
        def check(name, array, expected):
            if tuple(array.shape) != tuple(expected):
                raise ValueError(f"GRM input {name!r} has shape {tuple(array.shape)}, expected {tuple(expected)} "
                                 "(NHWC images; sizes from config.model.template_size/search_size)")

        batch = template.shape[0]
        check("template", template, (batch, self.template_size, self.template_size, 3))
        check("search", search, (batch, self.search_size, self.search_size, 3))
        if template_mask is not None:
            check("template_mask", template_mask, (batch, self.template_grid ** 2))
        if gumbel_noise is not None:
            check("gumbel_noise", gumbel_noise, (self.depth - 1, batch, self.search_grid ** 2, 2))

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train=False, threshold=0.0, ratio=0.0,
                 gumbel_noise=None, sample_ids=None):
        """Forward pass.

        Args:
          template: (B, Ht, Wt, 3) ImageNet-normalised RGB template crop.
          search: (B, Hs, Ws, 3) ImageNet-normalised RGB search crop.
          template_mask: (B, Nz) template box mask, needed by the roi* target representations only.
          train: training mode (Gumbel sampling, DropPath, BatchNorm batch statistics).
          threshold: inference division threshold (docs/model.md#inference-threshold); an array is fine and does
            not recompile.
          ratio: inference top-K forcing ratio (never used by the official tracker).
          gumbel_noise: (L−1, B, Ns, 2) Gumbel sample to use in training instead of the ``gumbel`` RNG stream.
          sample_ids: (B,) int, each sample's global index in the batch: DropPath draws sample i's masks from
            it (default 0 … B−1), so that they do not depend on how the batch is split across devices.
        """
        self._check_inputs(template, search, template_mask, gumbel_noise)
        tokens, aux = VisionTransformer(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            qkv_bias=self.qkv_bias, patch_size=self.patch_size, pos_embed_grid=self.pos_embed_grid,
            template_grid=self.template_grid, search_grid=self.search_grid, drop_path_rate=self.drop_path_rate,
            tgt_type=self.tgt_type, divide_hidden=tuple(self.divide_hidden), attention=self.attention,
            remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype, name="backbone",
        )(template.astype(self.dtype), search.astype(self.dtype), template_mask, train=train,
          threshold=threshold, ratio=ratio, gumbel_noise=gumbel_noise, sample_ids=sample_ids)

        batch, s = tokens.shape[0], self.search_grid
        feat = tokens[:, -s * s:].reshape(batch, s, s, self.embed_dim)  # token t → (t // S, t mod S)
        score, size, offset = CenterHead(channels=self.head_channels, bn_axis_name=self.bn_axis_name,
                                         dtype=self.dtype, param_dtype=self.param_dtype, name="box_head")(feat, train)
        decisions = jnp.stack([a["decision"] for a in aux])
        return dict(
            pred_boxes=decode_boxes(score, size, offset)[:, None, :],
            score_map=score,
            size_map=size,
            offset_map=offset,
            backbone_out=tokens.astype(jnp.float32),
            divide_logp=jnp.stack([a["logp"] for a in aux]),
            decisions=decisions,
            interaction_ratio=jnp.mean(decisions[..., 1], axis=-1).T,
        )


def build_model(config: ml_collections.ConfigDict, bn_axis_name: str | None = None) -> GRM:
    """The GRM described by ``config.model`` (validated first; a bad value raises naming its key)."""
    config_lib.validate(config)
    m = config.model
    return GRM(
        embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, qkv_bias=m.qkv_bias,
        patch_size=m.patch_size, pos_embed_grid=m.pos_embed_grid, template_size=m.template_size,
        search_size=m.search_size, drop_path_rate=m.drop_path_rate, tgt_type=m.tgt_type,
        divide_hidden=tuple(m.divide_hidden), head_channels=m.head_channels, bn_axis_name=bn_axis_name,
        attention=m.attention, remat=config.train.remat == "block", dtype=DTYPES[m.dtype],
    )


def inference_variables(variables: dict, dtype: str | Any) -> dict:
    """``variables`` with every Dense/Conv ``kernel`` stored in ``dtype`` (e.g. ``config.model.dtype``).

    A model built with a lower-precision ``dtype`` casts each kernel to it inside every call; casting once,
    ahead of inference, gives bit-identical outputs and saves reading ~4 bytes and writing ~2 bytes per parameter
    per forward (GRM-B/256 bfloat16 on a 2-core CPU: 284 → 264 ms, benchmarks/README.md). Biases, norms, position
    embeddings and BatchNorm statistics stay float32. Float32: ``variables`` unchanged. Not for training (the
    optimiser updates float32 parameters).
    """
    dtype = DTYPES.get(dtype, dtype)
    if jnp.dtype(dtype) == jnp.float32:
        return variables

    def cast(path, leaf):
        name = getattr(path[-1], "key", None)
        return leaf.astype(dtype) if name == "kernel" and jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map_with_path(cast, variables)


def host_init(model: GRM, *inputs, seed: int = 0) -> dict:
    """``model.init(PRNGKey(seed), *inputs)`` compiled for and run on the host CPU; NumPy leaves.

    The initialisers' random-number program is cheap to compile for a CPU (≈ 1 s for GRM-B/256) but slow for a
    GPU (H200, jax 0.11.2: 18 s for the tiny GRM, 40 s for GRM-B/256), and it runs once. The numbers are the same
    threefry bits through the same initialiser formulas, so the variables agree with a GPU ``init`` to float32
    rounding. Falls back to the default device where no CPU backend is configured (``JAX_PLATFORMS``).
    """
    try:
        cpu = jax.local_devices(backend="cpu")[0]  # this process's (jax.devices lists every process's)
    except RuntimeError:
        cpu = None
    with jax.default_device(cpu) if cpu is not None else contextlib.nullcontext():
        return jax.device_get(jax.jit(model.init)(jax.random.PRNGKey(seed), *inputs))


def example_inputs(config: ml_collections.ConfigDict, batch: int = 1) -> tuple:
    """Zero template and search images of ``config``'s sizes (NHWC), for ``init`` and shape evaluation."""
    m = config.model
    return (jnp.zeros((batch, m.template_size, m.template_size, 3)),
            jnp.zeros((batch, m.search_size, m.search_size, 3)))


def to_official_layout(outputs: dict) -> dict:
    """Map :class:`GRM` outputs to the official PyTorch layouts (the one place that knows them).

    Maps NHWC (B,S,S,C) → NCHW (B,C,S,S); ``decisions`` → (L−1, B, Ns) int8 class indices (1 = interacts, as
    the reference fixtures store them); ``interaction_ratio`` is the official train-mode ``decisions`` (B, L−1).
    """
    out = dict(outputs)
    for key in ("score_map", "size_map", "offset_map"):
        out[key] = jnp.transpose(outputs[key], (0, 3, 1, 2))
    out["decisions"] = jnp.argmax(outputs["decisions"], axis=-1).astype(jnp.int8)
    return out
