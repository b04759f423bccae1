"""Shared test fixtures: the official reference numbers and the small GRM they were produced with."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.convert.state_dict import state_dict_to_variables
from grm_jax.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"


def load_config(name: str, arg=None):
    """``configs/<name>.py``'s ``get_config(arg)``, loaded by path as ``--config`` would."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


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


def tiny_inputs(outputs):
    """NHWC template/search from the fixture's NCHW tensors, plus the template mask."""
    z = jnp.asarray(outputs["template"].transpose(0, 2, 3, 1))
    x = jnp.asarray(outputs["search"].transpose(0, 2, 3, 1))
    return z, x, jnp.asarray(outputs["template_mask"])


@pytest.fixture(scope="session")
def tiny_model_and_variables(tiny_outputs, tiny_state_dict):
    """The fixture's GRM (DropPath off: the reference train pass ran without it) with the converted weights."""
    config = load_config("grm_tiny")
    config.model.drop_path_rate = 0.0
    model = build_model(config)
    z, x, _ = tiny_inputs(tiny_outputs)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), z, x))
    return model, state_dict_to_variables(tiny_state_dict, shapes)
