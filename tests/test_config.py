"""The official configurations: every value, parameter counts (docs/model.md#configurations), validation errors."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from grm_jax import config as config_lib
from grm_jax.models import build_model
from helpers import GRM_CONFIG, load_config


def _param_counts(name):
    """(total, backbone without division and unused, division MLPs, head, unused), the split of
    docs/model.md#configurations."""
    config = load_config(name)
    model = build_model(config)
    z = jnp.zeros((1, config.model.template_size, config.model.template_size, 3))
    x = jnp.zeros((1, config.model.search_size, config.model.search_size, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    counts = {"backbone": 0, "divide": 0, "head": 0, "unused": 0}
    for path, leaf in traverse_util.flatten_dict(shapes["params"]).items():
        size = int(np.prod(leaf.shape))
        if path[0] == "box_head":
            counts["head"] += size
        elif path[-1] in ("cls_token", "pos_embed"):
            counts["unused"] += size
        elif any(p.startswith("divide_predict") for p in path):
            counts["divide"] += size
        else:
            counts["backbone"] += size
    return sum(counts.values()), counts


@pytest.mark.parametrize("name", ["B/256", "B/256-got"])
def test_vitb256_parameter_count(name):
    total, counts = _param_counts(name)
    assert counts == {"backbone": 85_892_352, "divide": 7_309_654, "head": 6_474_117, "unused": 152_064}
    assert total == 99_828_187


def test_vitl320_parameter_count():
    total, counts = _param_counts("L/320")
    assert counts == {"backbone": 303_574_016, "divide": 19_805_806, "head": 8_243_589, "unused": 202_752}
    assert total == 331_826_163


def test_tiny_config_matches_fixture_parameter_count():
    total, _ = _param_counts("tiny")
    assert total == 3_052_779  # meta.json num_params of the official tiny model


def test_official_values():
    b = load_config("B/256")
    g = load_config("B/256-got")
    large = load_config("L/320")
    assert (b.model.embed_dim, b.model.depth, b.model.num_heads) == (768, 12, 12)
    assert (large.model.embed_dim, large.model.depth, large.model.num_heads) == (1024, 24, 16)
    assert b.model.tgt_type == g.model.tgt_type == large.model.tgt_type == "allmax"
    assert (b.data.search.factor, b.data.search.size) == (4, 256)
    assert (large.data.search.factor, large.data.search.size) == (5, 320)
    assert (b.data.search.center_jitter, b.data.search.scale_jitter) == (3, 0.25)
    assert (large.data.search.center_jitter, large.data.search.scale_jitter) == (4.5, 0.5)
    assert (b.data.template.factor, b.data.template.size, b.data.template.center_jitter) == (2, 128, 0)
    assert b.data.datasets == ("LASOT", "GOT10K_vot_train", "COCO17", "TRACKINGNET")
    assert g.data.datasets == ("GOT10K_train",)
    assert (b.train.epochs, b.train.lr_drop_epoch, g.train.epochs, g.train.lr_drop_epoch) == (300, 240, 100, 80)
    assert (b.train.batch_size, large.train.batch_size) == (40, 10)
    assert (b.train.lr, b.train.backbone_multiplier, b.train.weight_decay, b.train.grad_clip_norm) == \
        (4e-4, 0.1, 1e-4, 0.1)
    assert (b.train.giou_weight, b.train.l1_weight, b.train.focal_weight) == (2.0, 5.0, 1.0)
    assert b.model.drop_path_rate == 0.1 and b.data.sample_per_epoch == 60000
    assert (b.test.search_factor, large.test.search_factor, large.test.search_size) == (4.0, 5.0, 320)
    # The official models keep a 128 px template at every search size (vitl_320: TEMPLATE.SIZE 128).
    assert (b.model.template_size, large.model.template_size, large.data.template.size, large.test.template_size) == \
        (128, 128, 128, 128)
    assert (b.model.backbone, g.model.backbone, large.model.backbone) == ("vit_base", "vit_base", "vit_large")
    assert (b.model.head_channels, large.model.head_channels) == (256, 256)
    assert (g.data.ratios, g.train.batch_size, g.data.search.factor) == ((1.0,), 40, 4.0)


def test_tiny_variant():
    """The fixtures' model (tests/fixtures/official/README.md): the B/256 recipe at toy size."""
    t, b = load_config("tiny"), load_config("B/256")
    m = t.model
    assert (m.backbone, m.embed_dim, m.depth, m.num_heads, m.head_channels) == ("custom", 192, 4, 3, 64)
    assert (m.template_size, m.search_size, t.data.template.size, t.test.search_size) == (64, 128, 64, 128)
    assert t.train.batch_size == 2
    assert t.test.hyper.to_dict() == b.test.hyper.to_dict() and t.data.search.to_dict() | dict(size=256) == \
        b.data.search.to_dict()
    assert load_config("tiny/128").to_dict() == t.to_dict()


def test_variant_spelling():
    """No argument is B/256; a size's default resolution; other resolutions; errors name the variant's part."""
    assert config_lib.load_config_file(str(GRM_CONFIG)).to_dict() == load_config("B/256").to_dict()
    assert load_config("L").to_dict() == load_config("L/320").to_dict()
    b384 = load_config("B/384")
    assert (b384.model.search_size, b384.model.template_size, b384.data.search.factor) == (384, 128, 4.0)
    config_lib.validate(b384)
    for variant, message in (("H/256", "size 'H'"), ("B/250", "resolution '250'"), ("B/x", "resolution 'x'"),
                             ("B/256-lasot", "recipe 'lasot'")):
        with pytest.raises(ValueError, match=f"variant '{variant}': {message}"):
            load_config(variant)


@pytest.mark.parametrize("dataset,expected", [
    ("lasot", 0.4), ("nfs", 0.60), ("uav", 0.55), ("avist", 0.4), ("trackingnet", 0.0), ("got10k_test", 0.0),
    ("lasot_ext", 0.0), ("otb", 0.0), ("tnl2k", 0.0), ("itb", 0.0), ("got10k_val", 0.0)])
def test_test_thresholds(dataset, expected):
    assert config_lib.test_threshold(load_config("B/256"), dataset) == expected
    assert config_lib.test_threshold(load_config("B/256-got"), dataset) == 0.0
    assert config_lib.test_threshold(load_config("L/320"), dataset) == 0.0


@pytest.mark.parametrize("key,value,message", [
    ("tgt_type", "allmin", "config.model.tgt_type = 'allmin'"),
    ("backbone", "vit_huge", "config.model.backbone = 'vit_huge'"),
    ("backbone", "vit_base", "config.model.backbone = 'vit_base' is embed_dim, depth, num_heads = (768, 12, 12)"),
    ("search_size", 250, "config.model.search_size = 250"),
    ("num_heads", 5, "config.model.num_heads = 5"),
    ("attention", "flash", "config.model.attention = 'flash'"),
    ("dtype", "float16", "config.model.dtype = 'float16'"),
    ("drop_path_rate", 1.5, "config.model.drop_path_rate = 1.5"),
])
def test_bad_config_values_are_named(key, value, message):
    config = load_config("tiny")
    config.model[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(config)


@pytest.mark.parametrize("key,value,message", [
    ("train.ratio_target", 1.5, "config.train.ratio_target = 1.5 must be a number in [0, 1]"),
    ("train.ratio_target", -0.1, "config.train.ratio_target = -0.1 must be a number >= 0.0"),
    ("data.channel_shuffle_prob", 2.0, "config.data.channel_shuffle_prob = 2.0 must be a number in [0, 1]"),
    ("data.colour_jitter", -0.5, "config.data.colour_jitter = -0.5 must be a number >= 0.0"),
    ("data.aspect_jitter", 1.5, "config.data.aspect_jitter = 1.5 must be a number in [0, 1]"),
    ("data.colour_rotation_prob", -1.0, "config.data.colour_rotation_prob = -1.0 must be a number >= 0.0"),
    ("train.gumbel_tau", 0.0, "config.train.gumbel_tau = 0.0 must be a number > 0.0"),
    ("train.gumbel_scale", -1.0, "config.train.gumbel_scale = -1.0 must be a number >= 0.0"),
    ("train.warmup_steps", -1, "config.train.warmup_steps = -1 must be an integer >= 0"),
    ("train.division_grad_clip", -1e-3, "config.train.division_grad_clip = -0.001 must be a number >= 0.0"),
    ("train.box_division_weight", float("nan"), "config.train.box_division_weight = nan must be a number >= 0.0"),
    ("train.box_division_margin", -1.0, "config.train.box_division_margin = -1.0 must be a number >= 0.0"),
])
def test_bad_training_options_are_named(key, value, message):
    config = load_config("tiny")
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        config_lib.validate(config)
    config[group][name] = 1 if key != "train.gumbel_tau" else 5.0  # the upper bound itself (a valid tau) passes
    config_lib.validate(config)


def test_bad_pos_embed_init_is_named():
    config = load_config("tiny")
    config.train.pos_embed_init = "fourier"
    with pytest.raises(ValueError, match=re.escape("config.train.pos_embed_init = 'fourier' is not one of")):
        config_lib.validate(config)
    config.train.pos_embed_init = "sincos"
    config_lib.validate(config)
    config.model.embed_dim, config.model.num_heads = 198, 3  # 198 = 3 · 66, not a multiple of 4
    with pytest.raises(ValueError, match="embed_dim divisible by 4, got 198"):
        config_lib.validate(config)


@pytest.mark.parametrize("key,value,message", [
    ("min_contrast", -1.0, "config.data.synthetic.min_contrast = -1.0 must be a number >= 0.0"),
    ("val_min_contrast", 250.0, "config.data.synthetic.val_min_contrast = 250.0 must be <= 200 grey levels"),
])
def test_bad_synthetic_contrast_is_named(key, value, message):
    config = load_config("tiny")
    config.data.synthetic[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        config_lib.validate(config)
    config.data.synthetic[key] = 80.0
    config_lib.validate(config)


def test_unknown_config_key_is_named():
    config = load_config("tiny")
    with pytest.raises(AttributeError, match="tgt_typ"):
        config.model.tgt_typ = "allmax"


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_size_update_out_of_range_is_named(value):
    config = load_config("tiny")
    config.test.size_update = value
    with pytest.raises(ValueError, match=r"config\.test\.size_update"):
        config_lib.validate(config)
