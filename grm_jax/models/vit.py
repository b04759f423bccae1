"""The ViT backbone of GRM (docs/model.md#backbone): shared patch embedding, template-then-search tokens, pre-norm
blocks.

Module and parameter names follow the official state dict (``backbone.blocks.3.attn.qkv`` →
``backbone/blocks_3/attn/qkv``), so conversion is a table of renames and transposes (``grm_jax/convert``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from grm_jax.models.layers import (
    DROPPATH_STREAM,
    accumulate_kwargs,
    dense_init,
    drop_path,
    gelu,
    layer_key,
    uniform_fan_in,
)
from grm_jax.models.model_config import ModelConfig
from grm_jax.models.relation import Attention

Array = Any
LN_EPS = 1e-6


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth per block, linearly spaced: rate_i = rate·i/(depth−1), i = 0..depth−1 (block 0: none)."""
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class Mlp(nn.Module):
    """Linear(D, D·mlp_ratio) → GELU (exact) → Linear(D·mlp_ratio, D)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        kw = dict(kernel_init=dense_init(), dtype=cfg.dtype, **accumulate_kwargs(cfg.dtype))
        h = gelu(nn.Dense(int(cfg.embed_dim * cfg.mlp_ratio), name="fc1", **kw)(x))
        return nn.Dense(x.shape[-1], name="fc2", **kw)(h)


class Block(nn.Module):
    """Pre-norm transformer block ``index``: x ← x + DropPath(Attn(LN1(x))); x ← x + DropPath(MLP(LN2(x))).

    Blocks 1..L−1 divide the search tokens. DropPath rate ``drop_path_rates(config.drop_path_rate, depth)[index]``;
    its two masks come from each sample's key, streams ``DROPPATH_STREAM + 2·index (+1)``
    (grm_jax/models/layers.py).
    """

    config: ModelConfig
    index: int

    def _keys(self, keys, train: bool, branch: int):
        """The DropPath keys of one residual branch, None where nothing is dropped."""
        if not train or self.rate == 0.0:
            return None
        if keys is None:
            raise ValueError(f"a training call with drop_path_rate = {self.config.drop_path_rate} needs per-sample "
                             "keys (sample_keys, grm_jax/models/layers.py)")
        return layer_key(keys, DROPPATH_STREAM + 2 * self.index + branch)

    @property
    def rate(self) -> float:
        return drop_path_rates(self.config.drop_path_rate, self.config.depth)[self.index]

    @nn.compact
    def __call__(self, x, template_mask=None, train=False, threshold=0.0, gumbel_noise=None, keys=None):
        norm = dict(epsilon=LN_EPS, dtype=self.config.dtype)
        attn_out, aux = Attention(self.config, divide=self.index != 0, index=self.index, name="attn")(
            nn.LayerNorm(name="norm1", **norm)(x), template_mask, train=train, threshold=threshold,
            gumbel_noise=gumbel_noise, keys=keys)
        x = x + drop_path(attn_out, self.rate, self._keys(keys, train, 0))
        mlp = Mlp(self.config, name="mlp")
        x = x + drop_path(mlp(nn.LayerNorm(name="norm2", **norm)(x)), self.rate, self._keys(keys, train, 1))
        return x, aux


class PatchEmbed(nn.Module):
    """Conv(3, D, k=16, s=16) then row-major flattening of the grid: token = row·W + col (no norm)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, images):
        p, dtype = self.config.patch_size, self.config.dtype
        fan_in = 3 * p ** 2
        x = nn.Conv(self.config.embed_dim, (p, p), strides=(p, p), padding="VALID",
                    kernel_init=uniform_fan_in(fan_in), bias_init=uniform_fan_in(fan_in), dtype=dtype,
                    name="proj", **accumulate_kwargs(dtype, conv=True))(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(nn.Module):
    """GRM's backbone: tokens [template ‖ search] through ``depth`` blocks (1..depth−1 divide), final LayerNorm.

    ``cls_token`` and the 224-px ``pos_embed`` are kept for state-dict parity but never used
    (docs/model.md#position-embeddings).
    Returns ``(tokens (B, Nz+Ns, D), aux)`` with ``aux`` the per-division-layer dicts of :class:`Attention`.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train=False, threshold=0.0, gumbel_noise=None,
                 keys=None):
        cfg = self.config
        d = cfg.embed_dim
        init = nn.initializers.normal(stddev=0.02)
        self.param("cls_token", init, (1, 1, d))
        self.param("pos_embed", init, (1, 1 + cfg.pos_embed_grid ** 2, d))
        # Fresh tables; the official build derives them from pos_embed by bicubic resizing (convert/pos_embed.py).
        pos_x = self.param("pos_embed_x", init, (1, cfg.num_search, d))
        pos_z = self.param("pos_embed_z", init, (1, cfg.num_template, d))

        embed = PatchEmbed(cfg, name="patch_embed")
        tokens = jnp.concatenate([embed(template) + pos_z, embed(search) + pos_x], axis=1)

        aux = []
        # Rematerialised blocks keep only their inputs for the backward pass; train and threshold steer Python
        # control flow, so they are static (argument positions 3-4, counting self).
        block_type = nn.remat(Block, static_argnums=(3, 4)) if cfg.remat else Block
        for i in range(cfg.depth):
            noise = None if gumbel_noise is None or i == 0 else gumbel_noise[i - 1]
            tokens, block_aux = block_type(cfg, i, name=f"blocks_{i}")(
                tokens, template_mask, train, threshold, noise, keys)
            if block_aux is not None:
                aux.append(block_aux)
        tokens = nn.LayerNorm(epsilon=LN_EPS, dtype=cfg.dtype, name="norm")(tokens)
        return tokens, aux
