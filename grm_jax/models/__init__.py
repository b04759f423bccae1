"""The GRM model: ViT backbone with generalized relation modeling, CENTER head."""

from grm_jax.models.grm import GRM, build_model, example_inputs, host_init, to_official_layout

__all__ = ["GRM", "build_model", "example_inputs", "host_init", "to_official_layout"]
