"""Shared test helpers (imported as ``from helpers import ...``; pytest puts tests/ on sys.path through
tests/conftest.py, which keeps only the fixtures): the repository paths, configs by variant, the fixture's inputs."""

from __future__ import annotations

import pathlib

import jax.numpy as jnp

from grm_jax.config import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"
GRM_CONFIG = ROOT / "configs" / "grm.py"


def config_spec(variant: str) -> str:
    """The ``--config`` value of a ``configs/grm.py`` variant (absolute path), e.g. ``.../configs/grm.py:tiny``."""
    return f"{GRM_CONFIG}:{variant}"


def load_config(variant: str):
    """``configs/grm.py:<variant>`` (``tiny``, ``B/256``, ``B/256-got``, ``L/320``), loaded as ``--config`` would."""
    return load_config_file(config_spec(variant))


def tiny_inputs(outputs):
    """NHWC template/search from the fixture's NCHW tensors, plus the template mask."""
    z = jnp.asarray(outputs["template"].transpose(0, 2, 3, 1))
    x = jnp.asarray(outputs["search"].transpose(0, 2, 3, 1))
    return z, x, jnp.asarray(outputs["template_mask"])
