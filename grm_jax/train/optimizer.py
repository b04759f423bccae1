"""The official optimiser (docs/training.md#optimiser): AdamW over three learning-rate groups, step decay,
PyTorch-style clipping; an optional linear warm-up (``config.train.warmup_steps``) and a later start for the
division MLPs (``config.train.divide_start_step``), both 0 (off) in the official recipe.

| group | parameters | learning rate |
|---|---|---|
| ``head`` | everything outside the backbone (box head) | LR |
| ``backbone`` | backbone parameters whose name has no ``divide`` | LR × BACKBONE_MULTIPLIER |
| ``divide`` | the division MLPs (``divide_predict_*``) | LR |
| ``unused`` | ``cls_token``, ``pos_embed`` (never get a gradient; PyTorch's AdamW skips them, decay included) | 0 |

Weight decay (1e-4) applies to every trained parameter, biases and norms included (``no_weight_decay`` is unused
upstream). AdamW is decoupled: p ← p − lr·wd·p, then the Adam step — the same arithmetic as ``optax.adamw``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

GROUPS = ("head", "backbone", "divide", "unused")


def param_group(path: tuple[str, ...]) -> str:
    """The learning-rate group of the parameter at ``path`` (Flax names, e.g. ('backbone','blocks_1',...))."""
    if path[0] != "backbone":
        return "head"
    if path[-1] in ("cls_token", "pos_embed"):
        return "unused"
    if any("divide" in name for name in path):
        return "divide"
    return "backbone"


def param_labels(params) -> dict:
    """A pytree like ``params`` holding each leaf's group name."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({path: param_group(path) for path in flat})


def step_decay_schedule(base_lr: float, steps_per_epoch: int, drop_epoch: int, gamma: float = 0.1,
                        max_drops: int = 0, warmup_steps: int = 0):
    """StepLR stepped at every epoch end: lr(step) = base·γ^n·w, n = ⌊epoch/drop_epoch⌋ with epoch =
    ⌊step/steps_per_epoch⌋ (0-based; the official epochs 1..drop_epoch use the base rate, later ones ×γ), and
    n ≤ ``max_drops`` when that is > 0.

    w = min(1, (step + 1)/warmup_steps) is a linear warm-up (not in the official recipe, which has none: w = 1 when
    ``warmup_steps`` = 0); step 0 trains at base/warmup_steps.
    """

    def schedule(step):
        drops = (step // steps_per_epoch) // drop_epoch
        if max_drops:
            drops = jnp.minimum(drops, max_drops)
        lr = base_lr * gamma ** jnp.asarray(drops).astype(jnp.float32)
        if warmup_steps:
            lr = lr * jnp.minimum(1.0, (jnp.asarray(step).astype(jnp.float32) + 1.0) / warmup_steps)
        return lr

    return schedule


class ClipState(NamedTuple):
    pass


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """``torch.nn.utils.clip_grad_norm_``: g ← g·min(1, max_norm/(‖g‖₂ + 1e-6)) (optax's version has no 1e-6)."""

    def init(params):
        del params
        return ClipState()

    def update(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(init, update)


def learning_rates(config, steps_per_epoch: int) -> dict:
    """Schedules per group (``unused`` has none)."""
    t = config.train
    base = {"head": t.lr, "backbone": t.lr * t.backbone_multiplier, "divide": t.lr * t.divide_multiplier}
    schedules = {name: step_decay_schedule(lr, steps_per_epoch, t.lr_drop_epoch, max_drops=t.lr_max_drops,
                                           warmup_steps=t.warmup_steps)
                 for name, lr in base.items()}
    if t.divide_start_step:
        schedules["divide"] = delayed(schedules["divide"], t.divide_start_step)
    return schedules


def delayed(schedule, start: int):
    """lr'(step) = 0 before ``start``, lr(step) from then on (the division MLPs held at their initial weights)."""
    return lambda step: jnp.where(step >= start, schedule(step), 0.0)


def make_optimizer(config, params, steps_per_epoch: int) -> optax.GradientTransformation:
    """Clip (global, all parameters) → per-group AdamW (β 0.9/0.999, eps 1e-8, wd ``config.train.weight_decay``)."""
    t = config.train
    if t.optimizer != "adamw":
        raise ValueError(f"config.train.optimizer = {t.optimizer!r}: only 'adamw' is the official optimiser")
    if t.scheduler != "step":
        raise ValueError(f"config.train.scheduler = {t.scheduler!r}: only 'step' is the official schedule")
    schedules = learning_rates(config, steps_per_epoch)
    transforms = {name: optax.adamw(schedules[name], b1=0.9, b2=0.999, eps=1e-8, weight_decay=t.weight_decay)
                  for name in ("head", "backbone", "divide")}
    transforms["unused"] = optax.set_to_zero()
    return optax.chain(clip_by_global_norm_torch(t.grad_clip_norm),
                       optax.multi_transform(transforms, param_labels(params)))
