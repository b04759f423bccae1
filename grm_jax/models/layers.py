"""Generic layers and helpers the GRM modules share: initialisers, exact GELU, lower-precision matmul arguments,
the CPU convolution-as-matmul, per-sample random keys and DropPath.

Randomness (one scheme, owned by the model): a training call gets one key per sample,
``k_g = fold_in(fold_in(key(seed), step), g)`` with g the sample's global index in the batch
(:func:`sample_keys`), and every layer derives its own draws from it with :func:`layer_key` — division layer i's
Gumbel noise from stream ``i``, block i's two DropPath masks from streams ``DROPPATH_STREAM + 2i`` and
``DROPPATH_STREAM + 2i + 1``. A sample's draws therefore depend on the seed, the step and the sample only: the same
global batch trains the same way on 1 device or on 4, and on any number of processes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = Any
DROPPATH_STREAM = 1 << 16  # layer_key streams below this are the division layers' Gumbel noise


def dense_init():
    """timm's ``trunc_normal_(std=0.02)`` truncates at ±2 absolute, i.e. ~100σ: effectively N(0, 0.02²)."""
    return nn.initializers.normal(stddev=0.02)


def uniform_fan_in(fan_in: int):
    """PyTorch's default Conv2d/Linear init U(±1/√fan_in) (kaiming-uniform with a = √5 gives the same bound)."""
    bound = fan_in ** -0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_SQRT_HALF = np.float32(np.sqrt(0.5))
_MINUS_TWO_OVER_SQRT_PI = np.float32(-2.0 / np.sqrt(np.pi))  # erfc'(u) = −2/√π · exp(−u²)


@jax.custom_vjp
def gelu(x):
    """GELU, exact erf form (PyTorch ``nn.GELU()``; Flax's default is the tanh approximation):
    gelu(x) = ½x · erfc(−x/√2), computed by ``jax.nn.gelu(x, approximate=False)``.

    Its backward pass keeps only x (:func:`_gelu_bwd`); JAX's own derivative keeps ½x, erfc(−x/√2) and
    exp(−x²/2) besides, arrays of the MLP's hidden size per block, for the same values."""
    return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    """g · gelu'(x) = g · (½ erfc(u) + ½x · (−2/√π) e^{−u²} · (−1/√2)), u = −x/√2: the transpose of JAX's JVP of
    ``jax.nn.gelu``, operation for operation, so that the gradient is bit-identical to autodiff's.

    The optimization barrier ties the recomputation to the incoming cotangent g: without it XLA's CPU scheduler
    computes erfc and exp of every block right after the forward pass and keeps them all until their backward
    (benchmarks/README.md, "What the backward pass keeps")."""
    x, g = jax.lax.optimization_barrier((x, g))
    half_x = 0.5 * x
    u = -x * _SQRT_HALF
    g_erfc = (_MINUS_TWO_OVER_SQRT_PI * (half_x * g)) * jnp.exp(-jnp.square(u))
    return (-(g_erfc * _SQRT_HALF) + 0.5 * (g * jax.lax.erfc(u)),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def conv_as_matmul(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                   feature_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` for NHWC × HWIO as one matmul over gathered patches (im2col).

    Non-overlapping patches (stride = kernel, the patch embedding) are a reshape; otherwise the kh·kw shifted
    strided views are concatenated along channels. Same products and sums as the convolution, in another order.
    Used for lower-precision convolutions, which XLA's CPU backend runs far below its bfloat16 matmul rate (it
    converts to float32); dilated, grouped or non-NHWC calls go to ``lax.conv_general_dilated``.
    """
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    dilated = any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
    if (lhs.ndim != 4 or dilated or feature_group_count != 1 or isinstance(padding, str) and padding != "VALID"
            or dimension_numbers not in (None, nhwc)):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision,
                                            preferred_element_type=preferred_element_type)
    kh, kw, cin, cout = rhs.shape
    sh, sw = window_strides
    if not isinstance(padding, str):
        lhs = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    b, h, w, c = lhs.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    if (kh, kw) == (sh, sw) and (h, w) == (oh * kh, ow * kw):
        cols = lhs.reshape(b, oh, kh, ow, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, oh, ow, kh * kw * c)
    else:
        cols = jnp.concatenate([
            jax.lax.slice(lhs, (0, i, j, 0), (b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)], axis=-1)
    return jax.lax.dot_general(cols, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                               precision=precision, preferred_element_type=preferred_element_type)


def accumulate_kwargs(dtype, conv: bool = False) -> dict:
    """Keyword arguments for a Flax ``Dense`` (or ``Conv``) computing in ``dtype``: none for float32 (the
    reference program, unchanged); for a lower precision, operands in ``dtype`` with float32 accumulation and
    output (``preferred_element_type``), convolutions as matmuls (:func:`conv_as_matmul`). On CPU this is also
    the fast path: a bfloat16 dot with bfloat16 output runs below the float32 rate, one with float32 output uses
    the AVX512-BF16 kernels at about twice it; a bfloat16 convolution runs at the float32 rate or below."""
    if jnp.dtype(dtype) == jnp.float32:
        return {}
    if conv:
        return dict(conv_general_dilated=functools.partial(conv_as_matmul, preferred_element_type=jnp.float32))
    return dict(dot_general=functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32))


def sample_keys(seed_key, step, sample_ids) -> Array:
    """Per-sample keys (B, 2) uint32: k_g = fold_in(fold_in(seed_key, step), g) for each global index g."""
    step_key = jax.random.fold_in(seed_key, step)
    return jax.vmap(lambda g: jax.random.fold_in(step_key, g))(jnp.asarray(sample_ids))


def layer_key(keys: Array, stream: int) -> Array:
    """Each sample's key for one layer's draws: fold_in(k_g, stream), (B, 2)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, stream))(keys)


def drop_path(x: Array, rate: float, keys: Array | None) -> Array:
    """Per-sample stochastic depth (timm, ``scale_by_keep``): x·Bernoulli(1 − rate)/(1 − rate), sample g's draw
    from its own key ``keys[g]``; identity when ``rate`` is 0 or ``keys`` is None (not training)."""
    if keys is None or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep))(keys)
    return x * (mask.reshape((x.shape[0],) + (1,) * (x.ndim - 1)).astype(x.dtype) / keep)
