"""The results folder's record: stale results are never taken for this run's (grm_jax.evaluate.provenance)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grm_jax.evaluate import provenance, results
from helpers import load_config


def _record(config, variables, **overrides):
    args = dict(dataset="otb", threshold=0.0, crop="host", checkpoint="ckpt", step=34)
    args.update(overrides)
    return provenance.make_record(config, variables, **args)


@pytest.fixture
def setup():
    config = load_config("tiny")
    variables = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, "batch_stats": {}}
    return config, variables


def test_digests_follow_the_weights_and_the_config(setup):
    config, variables = setup
    base = provenance.variables_digest(variables)
    changed = {"params": {"a": variables["params"]["a"].copy()}, "batch_stats": {}}
    changed["params"]["a"][1, 2] += 1e-6
    assert provenance.variables_digest(changed) != base
    assert provenance.variables_digest(variables) == base
    other = load_config("tiny")
    other.model.head_channels = 32
    assert provenance.config_digest(other, "otb") != provenance.config_digest(config, "otb")
    other = load_config("tiny")
    other.train.lr = 1.0  # training settings do not change what the tracker computes
    assert provenance.config_digest(other, "otb") == provenance.config_digest(config, "otb")


def test_same_run_keeps_finished_sequences(setup, tmp_path):
    config, variables = setup
    record = _record(config, variables)
    assert provenance.prepare(tmp_path, record) == []
    results.write_results(tmp_path, "seq", "otb", np.ones((3, 4)))
    assert provenance.prepare(tmp_path, _record(config, variables)) == []
    assert results.is_done(tmp_path, "seq", "otb")


@pytest.mark.parametrize("change,named", [(dict(threshold=0.9), "threshold: 0.0 → 0.9"),
                                          (dict(crop="device"), "crop: host → device"),
                                          (dict(step=200), "model: ")])
def test_another_run_is_refused_with_what_differs(setup, tmp_path, change, named):
    config, variables = setup
    provenance.prepare(tmp_path, _record(config, variables))
    results.write_results(tmp_path, "seq", "otb", np.ones((3, 4)))
    if "step" in change:  # a later step of training: other weights
        variables = {"params": {"a": variables["params"]["a"] + 1}, "batch_stats": {}}
    with pytest.raises(provenance.StaleResultsError, match="--retrack") as err:
        provenance.prepare(tmp_path, _record(config, variables, **change))
    assert named in str(err.value)
    assert results.is_done(tmp_path, "seq", "otb")  # nothing deleted without being asked


def test_retrack_deletes_the_old_results_and_records_the_new_run(setup, tmp_path):
    config, variables = setup
    provenance.prepare(tmp_path / "r", _record(config, variables, dataset="got10k_val"))
    for name in ("a", "b"):
        results.write_results(tmp_path / "r", name, "got10k_val", np.ones((3, 4)), np.ones(3))
    new = _record(config, variables, dataset="got10k_val", threshold=0.7)
    found = provenance.prepare(tmp_path / "r", new, on_mismatch="retrack")
    assert found == ["threshold: 0.0 → 0.7"]
    assert not any(results.is_done(tmp_path / "r", name, "got10k_val") for name in ("a", "b"))
    assert not list((tmp_path / "r" / "got10k").glob("*.txt"))
    assert json.loads((tmp_path / "r" / provenance.RECORD_NAME).read_text())["threshold"] == 0.7


def test_results_without_a_record_are_not_trusted(setup, tmp_path):
    config, variables = setup
    results.write_results(tmp_path, "seq", "otb", np.ones((3, 4)))
    with pytest.raises(provenance.StaleResultsError, match="no record of what made them"):
        provenance.prepare(tmp_path, _record(config, variables))
