"""grm_jax/models/layers.py: the exact GELU and its written-out backward pass."""

from __future__ import annotations

from math import erfc

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.ad_checkpoint import saved_residuals

from grm_jax.models.layers import gelu


def _inputs(shape=(3, 40, 96)):
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), shape)  # both tails and the zero of gelu' (x ≈ −0.75)
    return x, jax.random.normal(jax.random.PRNGKey(1), shape)


def test_gelu_forward_is_the_exact_erf_form():
    x, _ = _inputs()
    np.testing.assert_array_equal(gelu(x), jax.nn.gelu(x, approximate=False))
    xs = np.asarray(x, np.float64)
    exact = 0.5 * xs * np.vectorize(erfc)(-xs / np.sqrt(2.0))
    np.testing.assert_allclose(gelu(x), exact, rtol=1e-5, atol=1e-6)  # float32 rounding


def test_gelu_backward_is_bit_identical_to_autodiff():
    x, w = _inputs()
    ours = jax.jit(jax.grad(lambda x: jnp.sum(gelu(x) * w)))(x)
    autodiff = jax.jit(jax.grad(lambda x: jnp.sum(jax.nn.gelu(x, approximate=False) * w)))(x)
    np.testing.assert_array_equal(ours, autodiff)  # the same operations in the same order
    # and it is the derivative: ½ erfc(−x/√2) + x·φ(x), φ the standard normal density (float64 reference)
    xs = np.asarray(x, np.float64)
    derivative = 0.5 * np.vectorize(erfc)(-xs / np.sqrt(2.0)) + xs * np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(ours, np.asarray(w) * derivative, rtol=1e-5, atol=1e-6)


def test_gelu_backward_keeps_only_its_input():
    # An MLP's hidden layer, fc2(gelu(fc1(x))): what the backward pass keeps at the hidden size. The output
    # gelu(h) is fc2's input, needed for fc2's gradient either way.
    x, _ = _inputs((3, 40, 16))
    w1, w2 = jnp.ones((16, 96)), jnp.ones((96, 8))

    def hidden_kept(act):
        residuals = saved_residuals(lambda w: jnp.sum(act(x @ w[0]) @ w[1]), (w1, w2))
        return sum(aval.shape == (3, 40, 96) for aval, _ in residuals)

    assert hidden_kept(gelu) == 2  # h = fc1(x) and gelu(h)
    assert hidden_kept(lambda h: jax.nn.gelu(h, approximate=False)) == 4  # ½h, erfc(−h/√2), exp(−h²/2), gelu(h)
