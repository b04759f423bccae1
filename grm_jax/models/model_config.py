"""The model's hyper-parameters, declared once: :class:`ModelConfig`, built from ``config.model`` by
:meth:`ModelConfig.from_config` and handed whole to every module (the pattern of flax's ``examples/wmt``
``TransformerConfig``). Modules keep only what is their own (a block's index, its DropPath rate).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GRM's sizes and options. The values are declared once, in the experiment config (``config.model``,
    grm_jax/config.py and configs/grm.py): :meth:`from_config` is how a model gets them, so no field here repeats
    them as a default.

    ``dtype`` is the compute dtype (parameters are always float32); ``bn_axis_name`` the mapped axis BatchNorm
    averages its batch statistics over (None: per device); ``remat`` rematerialises each ViT block in training;
    ``gumbel_tau`` is the straight-through estimator's temperature (``config.train.gumbel_tau``; official 1),
    ``gumbel_scale`` the factor on its Gumbel noise (``config.train.gumbel_scale``; official 1),
    ``division_grad_clip`` the bound on each decision's gradient (``config.train.division_grad_clip``; 0 = none,
    official).
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    patch_size: int
    pos_embed_grid: int  # the 224-px pos_embed kept for state-dict parity
    template_size: int
    search_size: int
    drop_path_rate: float
    tgt_type: str
    divide_hidden: tuple[int, int]
    head_channels: int
    attention: str  # "masked" or "fused" (inference only; grm_jax/models/relation.py)
    dtype: Any
    remat: bool = False
    gumbel_tau: float = 1.0
    gumbel_scale: float = 1.0
    division_grad_clip: float = 0.0
    bn_axis_name: str | None = None

    @property
    def template_grid(self) -> int:
        return self.template_size // self.patch_size

    @property
    def search_grid(self) -> int:
        return self.search_size // self.patch_size

    @property
    def num_template(self) -> int:
        """Nz, the number of template tokens."""
        return self.template_grid ** 2

    @property
    def num_search(self) -> int:
        """Ns, the number of search tokens."""
        return self.search_grid ** 2

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, bn_axis_name: str | None = None) -> ModelConfig:
        """The model of ``config.model`` (plus ``config.train.remat``); validate ``config`` first."""
        m = config.model
        names = {f.name for f in dataclasses.fields(cls)} - {"dtype", "remat", "gumbel_tau", "gumbel_scale",
                                                            "division_grad_clip", "bn_axis_name", "divide_hidden"}
        return cls(**{name: m[name] for name in names}, divide_hidden=tuple(m.divide_hidden),
                   dtype=DTYPES[m.dtype], remat=config.train.remat == "block",
                   gumbel_tau=float(config.train.gumbel_tau), gumbel_scale=float(config.train.gumbel_scale),
                   division_grad_clip=float(config.train.division_grad_clip), bn_axis_name=bn_axis_name)
