"""Moving weights between the official PyTorch GRM and grm_jax (Flax) variables."""
