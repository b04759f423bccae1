"""CENTER head pieces: box decoding and the PyTorch-exact BatchNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from grm_jax.models.head import BatchNorm, decode_boxes


def test_decode_boxes_reads_size_and_offset_at_the_peak():
    s = 4
    score = jnp.zeros((1, s, s, 1)).at[0, 2, 3, 0].set(0.9)  # row 2, column 3
    size = jnp.zeros((1, s, s, 2)).at[0, 2, 3].set(jnp.array([0.5, 0.25]))
    offset = jnp.zeros((1, s, s, 2)).at[0, 2, 3].set(jnp.array([0.2, 0.7]))
    box = np.asarray(decode_boxes(score, size, offset))[0]
    np.testing.assert_allclose(box, [(3 + 0.2) / 4, (2 + 0.7) / 4, 0.5, 0.25], rtol=1e-7)


def test_decode_boxes_first_maximum_on_ties():
    score = jnp.ones((1, 3, 3, 1))
    size = jnp.arange(18.0).reshape(1, 3, 3, 2)
    box = np.asarray(decode_boxes(score, size, jnp.zeros((1, 3, 3, 2))))[0]
    np.testing.assert_array_equal(box, [0, 0, 0, 1])  # cell 0 wins, as torch.max on CPU


def test_batchnorm_matches_torch_train_and_eval():
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 4)).astype(np.float32) * 2 + 1
    bn = BatchNorm()
    variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    y, state = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])

    ref = torch.nn.BatchNorm2d(4, eps=1e-5, momentum=0.1)
    ref.train()
    y_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-5)  # float32 rounding
    stats = state["batch_stats"]
    np.testing.assert_allclose(stats["mean"], ref.running_mean.numpy(), atol=1e-6)
    # PyTorch's running_var uses the unbiased batch variance (n = 75 here, a 1.4 % difference).
    np.testing.assert_allclose(stats["var"], ref.running_var.numpy(), atol=1e-6)
    assert int(stats["num_batches_tracked"]) == int(ref.num_batches_tracked)

    ref.eval()
    y_eval = bn.apply({**variables, **state}, jnp.asarray(x), train=False)
    y_eval_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(y_eval), y_eval_ref, atol=1e-5)


def test_synchronised_batchnorm_equals_one_big_batch():
    """With axis_name, per-device batch statistics are averaged: same as one device seeing the whole batch."""
    x = np.random.default_rng(1).normal(size=(4, 3, 3, 2)).astype(np.float32)
    variables = BatchNorm().init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    y_one, s_one = BatchNorm().apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    sharded = jnp.asarray(x).reshape(2, 2, 3, 3, 2)
    y_two, s_two = jax.vmap(lambda xs: BatchNorm(axis_name="batch").apply(
        variables, xs, train=True, mutable=["batch_stats"]), axis_name="batch")(sharded)
    np.testing.assert_allclose(np.asarray(y_two).reshape(x.shape), np.asarray(y_one), atol=1e-6)
    np.testing.assert_allclose(s_two["batch_stats"]["var"][0], s_one["batch_stats"]["var"], atol=1e-7)
