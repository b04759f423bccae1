"""grm_jax: a JAX/Flax reimplementation of GRM (Generalized Relation Modeling for Transformer Tracking, CVPR 2023).

The package is numerically interchangeable with the official PyTorch code (Little-Podi/GRM @ 466ceb7); see ``docs/``
(start at ``docs/README.md``) for the behaviour it reproduces and ``tests/`` for the parity checks against reference
numbers.
"""

__version__ = "0.1.0"
