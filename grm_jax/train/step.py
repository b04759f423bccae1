"""The per-device training step: a pure function over one device's batch, collectives on ``axis_name='batch'``.

``jax.pmap(train_step, axis_name='batch')`` runs it data-parallel (gradients and metrics ``pmean``-ed; BatchNorm
statistics per device unless the model was built with ``bn_axis_name='batch'``). The same function runs under
``shard_map``; see ``grm_jax/train/parallel.py``.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from grm_jax import losses
from grm_jax.models.layers import sample_keys
from grm_jax.train.optimizer import learning_rates

AXIS = "batch"


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position (which is the step)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


def create_state(params, batch_stats, optimizer) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=optimizer.init(params))


def division_terms(t, out: dict, batch: dict, grid: int) -> list[tuple[str, float, Any]]:
    """The optional division regularisers of ``config.train`` ``t`` on the model's outputs ``out``, as (log name,
    weight, value): the official actor's entropy term (``entropy_weight``; 1 = its ``entropy=True``), and ours, the
    ratio term (``ratio_weight``, ``ratio_target``), the logit bound (``logit_weight``) and the box-supervised
    division (``box_division_weight``, ``box_division_margin``; on ``batch["search_anno"]`` over the ``grid``×``grid``
    search tokens) of grm_jax/losses.py.
    All are off in the official configs."""
    terms = []
    if t.entropy_weight:
        terms.append(("Ls/entropy", t.entropy_weight, losses.division_entropy_loss(out["interaction_ratio"])))
    if t.ratio_weight:
        terms.append(("Ls/ratio", t.ratio_weight, losses.division_ratio_loss(out["divide_logp"], t.ratio_target)))
    if t.logit_weight:
        terms.append(("Ls/logit", t.logit_weight, losses.division_logit_loss(out["divide_logp"])))
    if t.box_division_weight:
        terms.append(("Ls/box_division", t.box_division_weight, losses.division_box_loss(
            out["divide_logp"], batch["search_anno"], grid, t.box_division_margin)))
    return terms


def apply_optimizer(optimizer, grads, opt_state, params, batched: bool = False):
    """``(params + optimizer.update(grads, opt_state, params), new opt_state)``.

    ``batched=True`` runs the same update under ``jax.vmap`` over an added leading axis of size 1. The values are
    the same to float32 rounding (XLA fuses the two forms differently: the tiny GRM's parameters and moments 6e-7
    apart after 6 steps); what changes is how XLA compiles it inside ``jax.pmap``. There each donated parameter
    and moment was copied before it was updated in place, because the fusions that read the old moment and the one
    that writes the new one were scheduled apart: for GRM-B/256 that is 1.1 GB of copies per step. On one CPU device,
    clipping plus AdamW over four large arrays took 23-24 ms under pmap (12 copies) and 5.1 ms batched (no copies).
    The shard_map runner keeps the state replicated, and there batching made it slower (37 ms against 6.5 ms).
    The measurements are in benchmarks/README.md.
    """
    def update(g, s, p):
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s

    if not batched:
        return update(grads, opt_state, params)
    lead = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)
    params, opt_state = jax.vmap(update)(lead(grads), lead(opt_state), lead(params))
    return jax.tree_util.tree_map(lambda x: x[0], (params, opt_state))


def make_train_step(model, optimizer, config, steps_per_epoch: int, axis_name: str | None = AXIS,
                    reduce_grads: bool = True, batched_update: bool = False):
    """Build ``train_step(state, batch, seed_key) -> (state, metrics)`` for one device.

    ``batch``: ``template`` (b,Ht,Wt,3), ``search`` (b,Hs,Ws,3) normalised NHWC, ``template_mask`` (b,Nz),
    ``search_anno`` (b,4) normalised x1,y1,w,h; optionally ``gumbel_noise`` (b,L−1,Ns,2), recorded noise that
    replaces the drawn one (the parity override of ``grm_jax.train.trajectory``; training never sets it).
    Metrics: loss terms, IoU, gradient norm (before clipping), learning rates per group and the per-layer
    interaction ratio — all averaged over devices.
    ``reduce_grads=False`` is for shard_map with ``check_vma``, where gradients of replicated parameters arrive
    already summed (dividing by the axis size there instead of a second ``pmean``).
    ``batched_update=True`` is for pmap: see :func:`apply_optimizer`.
    """
    t = config.train

    def train_step(state: TrainState, batch: dict, seed_key):
        device = jax.lax.axis_index(axis_name) if axis_name else 0
        local = batch["search"].shape[0]
        sample_ids = device * local + jnp.arange(local)  # global indices: the draws follow samples, not devices
        # Every layer draws its Gumbel noise and DropPath masks from these keys (grm_jax/models/layers.py);
        # recorded noise, where the batch carries it, replaces the Gumbel draws (the trajectory parity test).
        keys = sample_keys(seed_key, state.step, sample_ids)
        noise = jnp.transpose(batch["gumbel_noise"], (1, 0, 2, 3)) if "gumbel_noise" in batch else None

        def loss_fn(params):
            out, new_state = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, batch["template"], batch["search"],
                batch.get("template_mask"), train=True, sample_keys=keys, gumbel_noise=noise,
                mutable=["batch_stats"])
            total, status = losses.grm_loss(out["pred_boxes"], out["score_map"], batch["search_anno"],
                                            search_size=model.config.search_size, giou_weight=t.giou_weight,
                                            l1_weight=t.l1_weight, focal_weight=t.focal_weight)
            for name, weight, term in division_terms(t, out, batch, model.config.search_grid):
                total = total + weight * term
                status = {**status, "Ls/total": jax.lax.stop_gradient(total), name: jax.lax.stop_gradient(term)}
            return total, (new_state["batch_stats"], status, out["interaction_ratio"])

        (total, (batch_stats, status, ratio)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        # One device on the pmap axis: the mean is the identity, and XLA's CPU all-reduce of one participant still
        # copies every gradient (67 ms of the GRM-B/256 batch-2 step on a 2-core CPU, benchmarks/README.md). Under
        # shard_map (reduce_grads=False) the pmean also tells check_vma that the metrics are replicated: kept.
        collective = bool(axis_name) and (jax.lax.axis_size(axis_name) > 1 or not reduce_grads)
        if collective:
            if reduce_grads:
                grads = jax.lax.pmean(grads, axis_name)
            else:
                grads = jax.tree_util.tree_map(lambda g: g / jax.lax.psum(1, axis_name), grads)
        params, opt_state = apply_optimizer(optimizer, grads, state.opt_state, state.params, batched_update)
        metrics = {**status, "grad_norm": optax.global_norm(grads),
                   "interaction_ratio": jnp.mean(ratio, axis=0),
                   **{f"lr/{name}": fn(state.step) for name, fn in learning_rates(config, steps_per_epoch).items()}}
        if collective:
            metrics = jax.lax.pmean(metrics, axis_name)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new_state, metrics

    return train_step
