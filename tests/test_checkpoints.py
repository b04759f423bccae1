"""grm_jax/checkpoints.py: the config recorded beside the weights; what a training checkpoint restores into."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from grm_jax.checkpoints import (
    CheckpointError,
    _to_json,
    config_from_json,
    make_manager,
    restore_latest,
    save_train_state,
)
from helpers import load_config

PER_DEVICE = "batch_stats_per_device"


def test_a_record_from_before_a_key_existed_gets_its_default():
    config = load_config("tiny")
    config.model.head_channels = 32
    record = _to_json(config)
    del record["data"]["synthetic"]["max_distractors"], record["train"]["divide_multiplier"]
    restored = config_from_json(json.loads(json.dumps(record)))
    assert restored.model.head_channels == 32 and restored.model.divide_hidden == (384, 192)  # kept, tuples back
    assert restored.data.synthetic.max_distractors == 3 and restored.train.divide_multiplier == 1.0  # defaults


def _saved(tmp_path, tree):
    """A training-checkpoint manager in ``tmp_path`` holding ``tree`` (a train-state-like dict) as its step."""
    config = load_config("tiny")
    manager = make_manager(tmp_path, config, steps_per_epoch=10)
    save_train_state(manager, tree, config)
    return manager


def _state(per_device_rows=None, width=3):
    tree = dict(step=np.int32(4), params=dict(w=np.arange(2 * width, dtype=np.float32).reshape(2, width)),
                batch_stats=dict(mean=np.full(3, 0.5, np.float32)))
    if per_device_rows is not None:
        tree["batch_stats_per_device"] = dict(mean=np.arange(per_device_rows * 3, dtype=np.float32).reshape(-1, 3))
    return jax.device_put(tree)  # jax arrays, as the training loop's global state is


def test_per_device_statistics_of_the_same_device_count_are_restored(tmp_path):
    manager = _saved(tmp_path, _state(per_device_rows=4))
    restored, warnings, notes = restore_latest(manager, _state(per_device_rows=4), optional=(PER_DEVICE,))
    assert not warnings and not notes
    np.testing.assert_array_equal(restored[PER_DEVICE]["mean"], _state(per_device_rows=4)[PER_DEVICE]["mean"])


@pytest.mark.parametrize("stored_rows, run_rows, said", [(4, 2, "stored for 4 devices and this run has 2 devices"),
                                                         (4, None, "stored for 4 devices and this run keeps none"),
                                                         (None, 4, f"it holds no '{PER_DEVICE}'")])
def test_per_device_statistics_of_another_device_count_are_read_past(tmp_path, stored_rows, run_rows, said):
    """A checkpoint written on 4 devices resumes on 2 (or 1, or a synchronised run), and one written without
    per-device statistics on 4: everything else is restored, the per-device item is left out with a note, and no
    checkpoint is taken for damaged."""
    manager = _saved(tmp_path, _state(per_device_rows=stored_rows))
    restored, warnings, notes = restore_latest(manager, _state(per_device_rows=run_rows), optional=(PER_DEVICE,))
    assert not warnings and len(notes) == 1 and said in notes[0], notes
    assert PER_DEVICE not in restored and int(np.asarray(restored["step"])) == 4
    np.testing.assert_array_equal(restored["params"]["w"], _state()["params"]["w"])
    np.testing.assert_array_equal(restored["batch_stats"]["mean"], _state()["batch_stats"]["mean"])
    assert sorted(p.name for p in manager.directory.iterdir()) == ["4"]


def test_a_checkpoint_of_another_config_is_refused_and_kept(tmp_path):
    """Other parameter shapes are another config, not damage: an error names the key and the shapes, and the
    checkpoint stays where it is (it is not moved aside as damaged)."""
    manager = _saved(tmp_path, _state(width=3))
    with pytest.raises(CheckpointError, match=r"params/w stored \(2, 3\) float32, this run \(2, 5\) float32"):
        restore_latest(manager, _state(width=5))
    assert sorted(p.name for p in manager.directory.iterdir()) == ["4"]
