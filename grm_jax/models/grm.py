"""The GRM model: template + search images → ViT with generalized relation modeling → CENTER head → box.

``GRM.__call__`` returns a dict (NHWC maps):

| key | shape | meaning |
|---|---|---|
| ``pred_boxes`` | (B,1,4) | normalised (cx,cy,w,h) in the search crop, decoded at the raw score map's maximum |
| ``score_map`` / ``size_map`` / ``offset_map`` | (B,S,S,1) / (B,S,S,2) / (B,S,S,2) | head outputs (docs/model.md) |
| ``backbone_out`` | (B, Nz+Ns, D) | tokens after the final LayerNorm |
| ``divide_logp`` | (L−1, B, Ns, 2) | per division layer, log-probabilities (class 1 = interacts with template) |
| ``decisions`` | (L−1, B, Ns, 2) | per division layer, the one-hot choice (straight-through in training) |
| ``interaction_ratio`` | (B, L−1) | mean over search tokens of ``decisions[..., 1]`` (the official ``decisions``) |

:func:`to_official_layout` maps this dict to the official NCHW tensors, in one place.
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from grm_jax import config as config_lib
from grm_jax.models.head import CenterHead, decode_boxes
from grm_jax.models.model_config import DTYPES, ModelConfig
from grm_jax.models.vit import VisionTransformer

Array = Any


class GRM(nn.Module):
    """GRM tracker network (docs/model.md). Build it from a config with :func:`build_model`."""

    config: ModelConfig

    def _check_inputs(self, template, search, template_mask, gumbel_noise, sample_keys):
        cfg = self.config

        def check(name, array, expected):
            if tuple(array.shape) != tuple(expected):
                raise ValueError(f"GRM input {name!r} has shape {tuple(array.shape)}, expected {tuple(expected)} "
                                 "(NHWC images; sizes from config.model.template_size/search_size)")

        batch = template.shape[0]
        check("template", template, (batch, cfg.template_size, cfg.template_size, 3))
        check("search", search, (batch, cfg.search_size, cfg.search_size, 3))
        if template_mask is not None:
            check("template_mask", template_mask, (batch, cfg.num_template))
        if gumbel_noise is not None:
            check("gumbel_noise", gumbel_noise, (cfg.depth - 1, batch, cfg.num_search, 2))
        if sample_keys is not None:
            check("sample_keys", sample_keys, (batch, 2))

    @nn.compact
    def __call__(self, template, search, template_mask=None, *, train=False, threshold=0.0, sample_keys=None,
                 gumbel_noise=None):
        """Forward pass.

        Args:
          template: (B, Ht, Wt, 3) ImageNet-normalised RGB template crop.
          search: (B, Hs, Ws, 3) ImageNet-normalised RGB search crop.
          template_mask: (B, Nz) template box mask, needed by the roi* target representations only.
          train: training mode (Gumbel sampling, DropPath, BatchNorm batch statistics).
          threshold: inference division threshold (docs/model.md#inference-threshold); an array is fine and does
            not recompile.
          sample_keys: (B, 2) uint32, one PRNG key per sample (training; :func:`grm_jax.models.layers.sample_keys`
            folds the seed, the step and the sample's global index): every layer derives its Gumbel noise and
            DropPath masks from them, so a sample's draws do not depend on how the batch is split across devices.
          gumbel_noise: (L−1, B, Ns, 2) recorded Gumbel noise used instead of the drawn one (the parity tests').
        """
        cfg = self.config
        self._check_inputs(template, search, template_mask, gumbel_noise, sample_keys)
        tokens, aux = VisionTransformer(cfg, name="backbone")(
            template.astype(cfg.dtype), search.astype(cfg.dtype), template_mask, train=train, threshold=threshold,
            gumbel_noise=gumbel_noise, keys=sample_keys)

        batch, s = tokens.shape[0], cfg.search_grid
        feat = tokens[:, -s * s:].reshape(batch, s, s, cfg.embed_dim)  # token t → (t // S, t mod S)
        score, size, offset = CenterHead(cfg, name="box_head")(feat, train)
        decisions = jnp.stack([a["decision"] for a in aux])
        return dict(
            pred_boxes=decode_boxes(score, size, offset)[:, None, :],
            score_map=score,
            size_map=size,
            offset_map=offset,
            backbone_out=tokens.astype(jnp.float32),
            divide_logp=jnp.stack([a["logp"] for a in aux]),
            decisions=decisions,
            interaction_ratio=jnp.mean(decisions[..., 1], axis=-1).T,
        )


def build_model(config: ml_collections.ConfigDict, bn_axis_name: str | None = None) -> GRM:
    """The GRM described by ``config.model`` (validated first; a bad value raises naming its key)."""
    config_lib.validate(config)
    return GRM(ModelConfig.from_config(config, bn_axis_name))


def inference_variables(variables: dict, dtype: str | Any) -> dict:
    """``variables`` with every Dense/Conv ``kernel`` stored in ``dtype`` (e.g. ``config.model.dtype``).

    A model built with a lower-precision ``dtype`` casts each kernel to it inside every call; casting once,
    ahead of inference, gives bit-identical outputs and saves reading ~4 bytes and writing ~2 bytes per parameter
    per forward (GRM-B/256 bfloat16 on a 2-core CPU: 284 → 264 ms, benchmarks/README.md). Biases, norms, position
    embeddings and BatchNorm statistics stay float32. Float32: ``variables`` unchanged. Not for training (the
    optimiser updates float32 parameters).
    """
    dtype = DTYPES.get(dtype, dtype)
    if jnp.dtype(dtype) == jnp.float32:
        return variables

    def cast(path, leaf):
        name = getattr(path[-1], "key", None)
        return leaf.astype(dtype) if name == "kernel" and jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree_util.tree_map_with_path(cast, variables)


def host_init(model: GRM, *inputs, seed: int = 0) -> dict:
    """``model.init(PRNGKey(seed), *inputs)`` compiled for and run on the host CPU; NumPy leaves.

    The initialisers' random-number program is cheap to compile for a CPU (≈ 1 s for GRM-B/256) but slow for a
    GPU (H200, jax 0.11.2: 18 s for the tiny GRM, 40 s for GRM-B/256), and it runs once. The numbers are the same
    threefry bits through the same initialiser formulas, so the variables agree with a GPU ``init`` to float32
    rounding. Falls back to the default device where no CPU backend is configured (``JAX_PLATFORMS``).
    """
    try:
        cpu = jax.local_devices(backend="cpu")[0]  # this process's (jax.devices lists every process's)
    except RuntimeError:
        cpu = None
    with jax.default_device(cpu) if cpu is not None else contextlib.nullcontext():
        return jax.device_get(jax.jit(model.init)(jax.random.PRNGKey(seed), *inputs))


def example_inputs(config: ml_collections.ConfigDict, batch: int = 1) -> tuple:
    """Zero template and search images of ``config``'s sizes (NHWC), for ``init`` and shape evaluation."""
    m = config.model
    return (jnp.zeros((batch, m.template_size, m.template_size, 3)),
            jnp.zeros((batch, m.search_size, m.search_size, 3)))


def to_official_layout(outputs: dict) -> dict:
    """Map :class:`GRM` outputs to the official PyTorch layouts (the one place that knows them).

    Maps NHWC (B,S,S,C) → NCHW (B,C,S,S); ``decisions`` → (L−1, B, Ns) int8 class indices (1 = interacts, as
    the reference fixtures store them); ``interaction_ratio`` is the official train-mode ``decisions`` (B, L−1).
    """
    out = dict(outputs)
    for key in ("score_map", "size_map", "offset_map"):
        out[key] = jnp.transpose(outputs[key], (0, 3, 1, 2))
    out["decisions"] = jnp.argmax(outputs["decisions"], axis=-1).astype(jnp.int8)
    return out
