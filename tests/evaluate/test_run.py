"""grm_jax.evaluate.run: loading a checkpoint with the model config it was trained with."""

from __future__ import annotations

import pytest

from conftest import load_config
from grm_jax import checkpoints
from grm_jax.evaluate.run import load_checkpoint_variables
from grm_jax.models import build_model, example_inputs, host_init


@pytest.fixture(scope="module")
def narrow_head_checkpoint(tmp_path_factory):
    """An Orbax checkpoint of the tiny GRM trained with head_channels=32 (the default tiny config has 64)."""
    config = load_config("grm_tiny")
    config.model.head_channels = 32
    variables = host_init(build_model(config), *example_inputs(config))
    directory = tmp_path_factory.mktemp("ckpt")
    checkpoints.save_variables(directory, variables, config, step=7)
    return directory, variables


def test_without_config_the_checkpoints_model_config_is_used(narrow_head_checkpoint, capsys):
    directory, saved = narrow_head_checkpoint
    config = load_config("grm_tiny")
    config.model.attention = "fused"  # a run option: kept, not taken from the checkpoint
    variables = load_checkpoint_variables(directory, config, config_given=False)
    assert config.model.head_channels == 32 and config.model.attention == "fused"
    assert "model.head_channels = 32 (--config: 64)" in capsys.readouterr().out
    model = build_model(config)
    model.apply(variables, *example_inputs(config))  # the weights fit the adopted config


def test_a_conflicting_config_is_named(narrow_head_checkpoint):
    directory, _ = narrow_head_checkpoint
    config = load_config("grm_tiny")
    with pytest.raises(ValueError, match=r"model.head_channels = 32 \(--config: 64\)\. Drop --config"):
        load_checkpoint_variables(directory, config, config_given=True)
