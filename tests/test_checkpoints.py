"""grm_jax/checkpoints.py: the config recorded beside the weights."""

from __future__ import annotations

import json

from grm_jax.checkpoints import _to_json, config_from_json
from helpers import load_config


def test_a_record_from_before_a_key_existed_gets_its_default():
    config = load_config("tiny")
    config.model.head_channels = 32
    record = _to_json(config)
    del record["data"]["synthetic"]["max_distractors"], record["train"]["divide_multiplier"]
    restored = config_from_json(json.loads(json.dumps(record)))
    assert restored.model.head_channels == 32 and restored.model.divide_hidden == (384, 192)  # kept, tuples back
    assert restored.data.synthetic.max_distractors == 3 and restored.train.divide_multiplier == 1.0  # defaults
