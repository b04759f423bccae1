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
