"""Shared test fixtures: the official reference numbers and the small GRM they were produced with. Helpers that tests
import (paths, configs, inputs) live in tests/helpers.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from grm_jax.convert.state_dict import state_dict_to_variables
from grm_jax.models import build_model
from helpers import OFFICIAL, load_config, tiny_inputs


@pytest.fixture(scope="session")
def tiny_outputs():
    """``grm_tiny/outputs.npz``: inputs, eval/train outputs and gradients of the official model."""
    return dict(np.load(OFFICIAL / "grm_tiny" / "outputs.npz"))


@pytest.fixture(scope="session")
def tiny_state_dict():
    """The official tiny GRM's state dict as NumPy arrays (read with ``torch.load(weights_only=True)``)."""
    import torch

    state = torch.load(OFFICIAL / "grm_tiny" / "state_dict.pth", map_location="cpu", weights_only=True)
    return {key: value.numpy() for key, value in state.items()}


@pytest.fixture(scope="session")
def processing_refs():
    return dict(np.load(OFFICIAL / "processing_refs.npz"))


@pytest.fixture(scope="session")
def tiny_model_and_variables(tiny_outputs, tiny_state_dict):
    """The fixture's GRM (DropPath off: the reference train pass ran without it) with the converted weights."""
    config = load_config("tiny")
    config.model.drop_path_rate = 0.0
    model = build_model(config)
    z, x, _ = tiny_inputs(tiny_outputs)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    return model, state_dict_to_variables(tiny_state_dict, shapes)
