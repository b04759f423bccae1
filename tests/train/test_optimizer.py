"""Learning-rate groups and the step schedule (grm_jax/train/optimizer.py)."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.train.optimizer import learning_rates, param_group, step_decay_schedule
from helpers import load_config


def test_groups_follow_the_official_split():
    assert param_group(("box_head", "conv1_ctr", "kernel")) == "head"
    assert param_group(("backbone", "blocks_1", "attn", "divide_predict_0", "kernel")) == "divide"
    assert param_group(("backbone", "blocks_1", "attn", "qkv", "kernel")) == "backbone"
    assert param_group(("backbone", "pos_embed")) == "unused"


def test_group_rates_follow_the_multipliers():
    config = load_config("tiny")
    config.train.lr, config.train.backbone_multiplier, config.train.divide_multiplier = 1e-3, 0.1, 0.25
    rates = {name: float(fn(0)) for name, fn in learning_rates(config, steps_per_epoch=10).items()}
    assert rates == pytest.approx({"head": 1e-3, "backbone": 1e-4, "divide": 2.5e-4}, rel=1e-6)


@pytest.mark.parametrize("max_drops,expected", [(0, [1, 1, 0.1, 0.1, 0.01]), (1, [1, 1, 0.1, 0.1, 0.1])])
def test_step_schedule_drops_every_drop_epoch_or_at_most_max_drops(max_drops, expected):
    schedule = step_decay_schedule(1.0, steps_per_epoch=3, drop_epoch=2, max_drops=max_drops)
    # epochs 0,1 | 2,3 | 4: steps 0, 3, 6, 9, 12
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 3, 6, 9, 12)], expected, rtol=1e-6)


def test_warmup_ramps_linearly_then_follows_the_step_schedule():
    schedule = step_decay_schedule(1.0, steps_per_epoch=3, drop_epoch=2, warmup_steps=4)
    # (step + 1) / 4 for steps 0..3, then the schedule itself: 1 until step 6, 0.1 after
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 1, 2, 3, 4, 5, 6)],
                               [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.1], rtol=1e-6)


def test_no_warmup_is_the_official_schedule():
    config = load_config("tiny")
    assert config.train.warmup_steps == 0
    config.train.lr_drop_epoch = 2
    official = step_decay_schedule(config.train.lr, 3, 2)  # the same arithmetic as before warmup_steps existed
    ours = learning_rates(config, steps_per_epoch=3)["head"]
    assert [float(ours(s)) for s in range(8)] == [float(official(s)) for s in range(8)]
    assert float(ours(0)) == pytest.approx(config.train.lr, rel=1e-7)  # step 0 at the full rate: no warm-up


def test_divide_start_step_holds_only_the_division_group():
    config = load_config("tiny")
    config.train.divide_start_step = 5
    rates = learning_rates(config, steps_per_epoch=100)
    assert [float(rates["divide"](s)) for s in (0, 4)] == [0.0, 0.0]
    assert float(rates["divide"](5)) == pytest.approx(config.train.lr * config.train.divide_multiplier, rel=1e-7)
    assert float(rates["head"](0)) == pytest.approx(config.train.lr, rel=1e-7)  # the other groups train from step 0
