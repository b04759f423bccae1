"""The CENTER head (docs/model.md#center-head): three conv ladders (ctr, offset, size) on the search feature map,
and box decoding.

Layout is NHWC: the head takes (B, S, S, D) and returns ``score_map`` (B,S,S,1), ``size_map`` (B,S,S,2) (w, h),
``offset_map`` (B,S,S,2) (x, y). Names follow the official state dict: ``box_head.conv1_ctr.0`` (conv) →
``box_head/conv1_ctr_0``, ``box_head.conv1_ctr.1`` (BatchNorm) → ``box_head/conv1_ctr_1``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from grm_jax.models.layers import accumulate_kwargs, uniform_fan_in
from grm_jax.models.model_config import ModelConfig

Array = Any
BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running ← (1 − m)·running + m·batch
SCORE_CLAMP = 1e-4
BRANCHES = ("ctr", "offset", "size")
BRANCH_OUT = {"ctr": 1, "offset": 2, "size": 2}


class BatchNorm(nn.Module):
    """PyTorch ``BatchNorm2d`` over NHWC: batch statistics in training, running statistics otherwise.

    Normalises with the biased batch variance but updates ``var`` with the unbiased one (×n/(n−1), n = B·H·W),
    as PyTorch does; Flax's own BatchNorm keeps the biased one. ``num_batches_tracked`` counts training passes,
    as PyTorch's buffer does (kept so a converted checkpoint round-trips exactly). With ``axis_name`` set, the
    batch statistics are averaged over that mapped axis (synchronised BN; equal per-device batches assumed).
    """

    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPS
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        tracked = self.variable("batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32))

        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            count = xf.size // features
            mean = jnp.mean(xf, axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            var = jnp.mean(jnp.square(xf - mean), axes)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
                count = count * jax.lax.psum(1, self.axis_name)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (count / (count - 1))
                tracked.value = tracked.value + 1
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale + bias).astype(self.dtype)


class CenterHead(nn.Module):
    """The official ``CenterPredictor`` (``lib/models/layers/head.py``): per branch conv1..conv4 (3×3, pad 1, BN,
    ReLU; C → c → c/2 → c/4 → c/8), conv5 1×1.

    score = clamp(sigmoid(ctr), 1e-4, 1−1e-4); size = clamp(sigmoid(size), 1e-4, 1−1e-4); offset raw.
    """

    config: ModelConfig

    def conv(self, features, kernel, fan_in, name):
        dtype = self.config.dtype
        return nn.Conv(features, (kernel, kernel), padding=[(kernel // 2, kernel // 2)] * 2,
                       kernel_init=nn.initializers.xavier_uniform(), bias_init=uniform_fan_in(fan_in),
                       dtype=dtype, name=name, **accumulate_kwargs(dtype, conv=True))

    @nn.compact
    def __call__(self, feat, train: bool = False):
        c = self.config.head_channels
        widths = [feat.shape[-1], c, c // 2, c // 4, c // 8]
        maps = {}
        for branch in BRANCHES:
            x = feat
            for i in range(1, 5):
                x = self.conv(widths[i], 3, widths[i - 1] * 9, f"conv{i}_{branch}_0")(x)
                x = BatchNorm(axis_name=self.config.bn_axis_name, dtype=self.config.dtype,
                              name=f"conv{i}_{branch}_1")(x, train)
                x = nn.relu(x)
            maps[branch] = self.conv(BRANCH_OUT[branch], 1, widths[4], f"conv5_{branch}")(x).astype(jnp.float32)
        score = jnp.clip(jax.nn.sigmoid(maps["ctr"]), SCORE_CLAMP, 1 - SCORE_CLAMP)
        size = jnp.clip(jax.nn.sigmoid(maps["size"]), SCORE_CLAMP, 1 - SCORE_CLAMP)
        return score, size, maps["offset"]


def decode_boxes(score_map: Array, size_map: Array, offset_map: Array) -> Array:
    """``CenterPredictor.cal_bbox`` (docs/model.md#box-decoding): normalised (cx, cy, w, h) (B,4) at the score map's
    first maximum.

    idx = argmax(score) over the S·S cells (row-major); iy = idx // S, ix = idx mod S;
    box = ((ix + ox)/S, (iy + oy)/S, w, h) with (w,h), (ox,oy) read at idx. No +0.5 cell-centre shift.
    """
    batch, s = score_map.shape[0], score_map.shape[1]
    idx = jnp.argmax(score_map.reshape(batch, s * s), axis=-1)
    size = jnp.take_along_axis(size_map.reshape(batch, s * s, 2), idx[:, None, None], axis=1)[:, 0]
    offset = jnp.take_along_axis(offset_map.reshape(batch, s * s, 2), idx[:, None, None], axis=1)[:, 0]
    ix = (idx % s).astype(jnp.float32)
    iy = (idx // s).astype(jnp.float32)
    return jnp.stack([(ix + offset[:, 0]) / s, (iy + offset[:, 1]) / s, size[:, 0], size[:, 1]], axis=-1)
