"""The ViT backbone of GRM (docs/model.md#backbone): shared patch embedding, template-then-search tokens, pre-norm
blocks.

Module and parameter names follow the official state dict (``backbone.blocks.3.attn.qkv`` →
``backbone/blocks_3/attn/qkv``), so conversion is a table of renames and transposes (``grm_jax/convert``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from grm_jax.models.relation import Attention, accumulate_kwargs, dense_init, gelu

Array = Any
LN_EPS = 1e-6


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth per block, linearly spaced: rate_i = rate·i/(depth−1), i = 0..depth−1 (block 0: none)."""
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


def uniform_fan_in(fan_in: int):
    """PyTorch's default Conv2d/Linear init U(±1/√fan_in) (kaiming-uniform with a = √5 gives the same bound)."""
    bound = fan_in ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class DropPath(nn.Module):
    """Per-sample stochastic depth (timm, ``scale_by_keep``): x·Bernoulli(keep)/keep; identity outside training.

    Sample i's draw is ``bernoulli(fold_in(k, sample_ids[i]))`` with ``k`` this call's key from the ``droppath``
    RNG stream (``sample_ids`` defaults to 0 … B−1). With the global sample index as id and a stream key that does
    not depend on the device (grm_jax/train/step.py), a sample is dropped the same way on 1 device or on 4.
    """

    rate: float

    @nn.compact
    def __call__(self, x, train: bool, sample_ids=None):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        key = self.make_rng("droppath")
        ids = jnp.arange(x.shape[0]) if sample_ids is None else sample_ids
        mask = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), keep))(ids)
        return x * (mask.reshape((x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype) / keep)


class Mlp(nn.Module):
    """Linear(D, hidden) → GELU (exact) → Linear(hidden, D)."""

    hidden: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(kernel_init=dense_init(), dtype=self.dtype, param_dtype=self.param_dtype,
                  **accumulate_kwargs(self.dtype))
        h = gelu(nn.Dense(self.hidden, name="fc1", **kw)(x))
        return nn.Dense(x.shape[-1], name="fc2", **kw)(h)


class Block(nn.Module):
    """Pre-norm transformer block: x ← x + DropPath(Attn(LN1(x))); x ← x + DropPath(MLP(LN2(x)))."""

    dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.0
    divide: bool = False
    num_template: int = 64
    tgt_type: str = "allmax"
    divide_hidden: tuple[int, int] = (384, 192)
    attention: str = "masked"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, template_mask=None, train=False, threshold=0.0, ratio=0.0, gumbel_noise=None,
                 sample_ids=None):
        norm = dict(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype)
        drop = DropPath(self.drop_path)
        attn_out, aux = Attention(
            dim=self.dim, num_heads=self.num_heads, qkv_bias=self.qkv_bias, divide=self.divide,
            num_template=self.num_template, tgt_type=self.tgt_type, divide_hidden=self.divide_hidden,
            attention=self.attention, dtype=self.dtype, param_dtype=self.param_dtype, name="attn",
        )(nn.LayerNorm(name="norm1", **norm)(x), template_mask, train=train, threshold=threshold, ratio=ratio,
          gumbel_noise=gumbel_noise)
        x = x + drop(attn_out, train, sample_ids)
        mlp = Mlp(hidden=int(self.dim * self.mlp_ratio), dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")
        x = x + drop(mlp(nn.LayerNorm(name="norm2", **norm)(x)), train, sample_ids)
        return x, aux


class PatchEmbed(nn.Module):
    """Conv(3, D, k=16, s=16) then row-major flattening of the grid: token = row·W + col (no norm)."""

    dim: int
    patch_size: int = 16
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        fan_in = 3 * self.patch_size ** 2
        x = nn.Conv(self.dim, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding="VALID",
                    kernel_init=uniform_fan_in(fan_in), bias_init=uniform_fan_in(fan_in), dtype=self.dtype,
                    param_dtype=self.param_dtype, name="proj", **accumulate_kwargs(self.dtype, conv=True))(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class VisionTransformer(nn.Module):
    """GRM's backbone: tokens [template ‖ search] through ``depth`` blocks (1..depth−1 divide), final LayerNorm.

    ``cls_token`` and the 224-px ``pos_embed`` are kept for state-dict parity but never used
    (docs/model.md#position-embeddings).
    Returns ``(tokens (B, Nz+Ns, D), aux)`` with ``aux`` the per-division-layer dicts of :class:`Attention`.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_size: int = 16
    pos_embed_grid: int = 14
    template_grid: int = 8
    search_grid: int = 16
    drop_path_rate: float = 0.1
    tgt_type: str = "allmax"
    divide_hidden: tuple[int, int] = (384, 192)
    attention: str = "masked"
    remat: bool = False  # per-block rematerialisation: the backward pass recomputes each block from its input
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train=False, threshold=0.0, ratio=0.0,
                 gumbel_noise=None, sample_ids=None):
        d = self.embed_dim
        init = nn.initializers.normal(stddev=0.02)
        self.param("cls_token", init, (1, 1, d), self.param_dtype)
        self.param("pos_embed", init, (1, 1 + self.pos_embed_grid ** 2, d), self.param_dtype)
        # Fresh tables; the official build derives them from pos_embed by bicubic resizing (convert/pos_embed.py).
        pos_x = self.param("pos_embed_x", init, (1, self.search_grid ** 2, d), self.param_dtype)
        pos_z = self.param("pos_embed_z", init, (1, self.template_grid ** 2, d), self.param_dtype)

        embed = PatchEmbed(d, self.patch_size, dtype=self.dtype, param_dtype=self.param_dtype, name="patch_embed")
        tokens = jnp.concatenate([embed(template) + pos_z, embed(search) + pos_x], axis=1)
        num_template = self.template_grid ** 2

        aux = []
        # Rematerialised blocks keep only their inputs for the backward pass; train, threshold and ratio steer
        # Python control flow, so they are static (argument positions 3-5, counting self).
        block_type = nn.remat(Block, static_argnums=(3, 4, 5)) if self.remat else Block
        for i, rate in enumerate(drop_path_rates(self.drop_path_rate, self.depth)):
            noise = None if gumbel_noise is None or i == 0 else gumbel_noise[i - 1]
            tokens, block_aux = block_type(
                dim=d, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, drop_path=rate,
                divide=i != 0, num_template=num_template, tgt_type=self.tgt_type, divide_hidden=self.divide_hidden,
                attention=self.attention, dtype=self.dtype, param_dtype=self.param_dtype, name=f"blocks_{i}",
            )(tokens, template_mask, train, threshold, ratio, noise, sample_ids)
            if block_aux is not None:
                aux.append(block_aux)
        tokens = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=self.param_dtype, name="norm")(tokens)
        return tokens, aux
