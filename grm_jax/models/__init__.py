"""The GRM model: ViT backbone with generalized relation modeling, CENTER head."""

from grm_jax.models.grm import GRM, build_model, example_inputs, host_init, to_official_layout
from grm_jax.models.layers import sample_keys
from grm_jax.models.model_config import ModelConfig

__all__ = ["GRM", "ModelConfig", "build_model", "example_inputs", "host_init", "sample_keys", "to_official_layout"]
