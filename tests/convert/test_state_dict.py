"""Official state dict ↔ Flax variables: key mapping, layouts, errors (docs/model.md#state-dict-layout)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.convert import state_dict as sd
from grm_jax.models import build_model
from helpers import load_config, tiny_inputs

KEYS_FILE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "vitb256_state_dict_keys.txt"


def _appendix_c():
    rows = [line.split("\t") for line in KEYS_FILE.read_text().splitlines() if not line.startswith("#")]
    return [(key, tuple(int(n) for n in shape.split(",") if n), dtype) for key, shape, dtype in rows]


def _model_shapes(name):
    config = load_config(name)
    model = build_model(config)
    z = jnp.zeros((1, config.model.template_size, config.model.template_size, 3))
    x = jnp.zeros((1, config.model.search_size, config.model.search_size, 3))
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))


def test_vitb256_converts_exactly_the_308_official_keys():
    rows = _appendix_c()
    assert len(rows) == 308
    # A synthetic state dict of the official shapes (broadcast zeros: no memory for 100 M parameters).
    state = {key: np.broadcast_to(np.zeros((), np.int64 if dtype == "int64" else np.float32), shape)
             for key, shape, dtype in rows}
    shapes = _model_shapes("B/256")
    variables = sd.state_dict_to_variables(state, shapes)
    back = sd.variables_to_state_dict(variables)
    assert list(back) == [key for key, _, _ in rows]  # same keys, in the official order
    for key, shape, dtype in rows:
        assert back[key].shape == shape, key
        assert str(back[key].dtype) == dtype, key


def test_tiny_round_trip_is_bit_exact(tiny_state_dict, tiny_outputs):
    model = build_model(load_config("tiny"))
    z, x, _ = tiny_inputs(tiny_outputs)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    back = sd.variables_to_state_dict(sd.state_dict_to_variables(tiny_state_dict, shapes))
    assert list(back) == list(tiny_state_dict)
    for key, value in tiny_state_dict.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("key,ndim,expected", [
    ("backbone.blocks.3.attn.qkv.weight", 2, ("params", ("backbone", "blocks_3", "attn", "qkv", "kernel"))),
    ("backbone.blocks.10.attn.divide_predict.4.bias", 1,
     ("params", ("backbone", "blocks_10", "attn", "divide_predict_4", "bias"))),
    ("backbone.norm.weight", 1, ("params", ("backbone", "norm", "scale"))),
    ("backbone.pos_embed_x", 3, ("params", ("backbone", "pos_embed_x"))),
    ("backbone.patch_embed.proj.weight", 4, ("params", ("backbone", "patch_embed", "proj", "kernel"))),
    ("box_head.conv1_ctr.1.running_var", 1, ("batch_stats", ("box_head", "conv1_ctr_1", "var"))),
    ("box_head.conv5_size.weight", 4, ("params", ("box_head", "conv5_size", "kernel"))),
])
def test_key_mapping_both_ways(key, ndim, expected):
    assert sd.torch_key_to_flax(key, ndim) == expected
    assert sd.flax_path_to_torch(*expected) == key


def test_layouts():
    linear = np.arange(6.0).reshape(2, 3)  # (out, in)
    np.testing.assert_array_equal(sd.torch_to_flax_array("a.weight", linear), linear.T)
    conv = np.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)  # (O, I, kh, kw)
    flax_conv = sd.torch_to_flax_array("a.weight", conv)
    assert flax_conv.shape == (4, 5, 3, 2)
    assert flax_conv[1, 2, 0, 1] == conv[1, 0, 1, 2]
    np.testing.assert_array_equal(sd.flax_to_torch_array("a.weight", flax_conv), conv)


def test_mismatches_name_every_offending_key(tiny_state_dict):
    shapes = _model_shapes("tiny")
    state = dict(tiny_state_dict)
    del state["backbone.blocks.2.attn.divide_predict.0.weight"]
    del state["box_head.conv3_size.1.running_mean"]
    state["backbone.extra_token"] = np.zeros(3, np.float32)
    state["backbone.pos_embed_x"] = np.zeros((1, 65, 192), np.float32)
    with pytest.raises(sd.StateDictMismatchError) as info:
        sd.state_dict_to_variables(state, shapes)
    message = str(info.value)
    for needle in ("missing keys (2)", "backbone.blocks.2.attn.divide_predict.0.weight",
                   "box_head.conv3_size.1.running_mean", "unexpected keys (1)", "backbone.extra_token",
                   "backbone.pos_embed_x: checkpoint (1, 65, 192) vs model (1, 64, 192)"):
        assert needle in message, needle


def test_wrong_config_for_checkpoint_names_shapes(tiny_state_dict):
    """ViT-B shapes for the tiny checkpoint: the first mismatching keys and both shapes are named."""
    with pytest.raises(sd.StateDictMismatchError, match=r"backbone.cls_token: checkpoint \(1, 1, 192\) vs model "
                                                        r"\(1, 1, 768\)"):
        sd.state_dict_to_variables(tiny_state_dict, _model_shapes("B/256"))


def test_unwrap_checkpoint():
    net = {"a": np.zeros(1)}
    assert sd.unwrap_checkpoint({"net": net, "epoch": 3}) is net
    assert sd.unwrap_checkpoint(net) is net
