"""Replay a recorded run of the official GRM trainer through this package's training code, step by step.

A trajectory is ``trajectory.npz`` with ``meta.json`` beside it, recorded with the official code (Little-Podi/GRM:
the model of ``lib/models/grm``, the loss of ``lib/train/actors/grm.py``'s ``GRMActor.compute_losses``,
``torch.nn.utils.clip_grad_norm_``, the optimizer and StepLR of ``lib/train/base_functions.py``'s
``get_optimizer_scheduler``); docs/comparison.md lists its keys. The replay feeds each recorded
step's batch and Gumbel noise to the same objects ``train.py`` uses (``make_optimizer``, ``create_state``, the
``RUNNERS`` runner around ``make_train_step``) on one device, and :func:`compare` sets each step's loss terms,
pre-clip gradient norm, learning rates and parameter norms, and the final state, against the recording.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import ml_collections
import numpy as np

from grm_jax.convert.state_dict import state_dict_to_variables, variables_to_state_dict
from grm_jax.data.processing import normalize_image
from grm_jax.models import build_model, example_inputs
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.parallel import RUNNERS
from grm_jax.train.step import create_state

PER_STEP = ("template_u8", "search_u8", "search_box", "template_mask", "gumbel_noise", "loss_total", "loss_giou",
            "loss_l1", "loss_loc", "iou", "grad_norm", "lr", "param_norm")
META = ("steps", "batch", "drop_after", "lr", "backbone_multiplier", "weight_decay", "grad_clip_norm",
        "giou_weight", "l1_weight", "param_names")
#: Recorded loss term → the train step's metric of the same quantity.
LOSSES = {"loss_total": "Ls/total", "loss_giou": "Ls/giou", "loss_l1": "Ls/l1", "loss_loc": "Ls/loc"}
LR_GROUPS = ("lr/head", "lr/backbone", "lr/divide")  # the official param groups 0, 1, 2
#: Acceptance (relative errors): loss terms at step 0 / later steps, pre-clip gradient norm, final parameters as one
#: vector, every final parameter tensor, BatchNorm running statistics. Learning rates: float32 rounding of the
#: schedule (the step computes them in float32), 1e-6. Exempt from ``tensor`` and ``bn``, see :func:`noise_driven`.
#: The mean IoU (a metric in [0, 1], not a loss term) is held to an absolute ``iou``: near 0 its relative error
#: says nothing (seed 7, batch 6, step 0: IoU 0.006, relative error 3.8e-5, absolute 2.3e-7).
#: ``moved``: ‖ours − official‖ / ‖official − initial‖ over the parameters (but :func:`noise_driven`): how much of
#: the way training moved them is not followed (10 steps of the tiny GRM move them by 1.3 % of their norm).
TOLERANCES = dict(loss_first=1e-5, loss=1e-4, grad_norm=1e-4, lr=1e-6, params=1e-4, tensor=1e-3, bn=1e-4, iou=1e-5,
                  moved=1e-3)


class TrajectoryError(ValueError):
    """A trajectory file is incomplete or inconsistent (the message names the file and key)."""


@dataclasses.dataclass
class Trajectory:
    path: pathlib.Path
    meta: dict
    arrays: dict

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    def state_dict(self, which: str) -> dict:
        """``init`` or ``final`` state dict (official keys)."""
        prefix = f"{which}/"
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}


def load(path) -> Trajectory:
    """``trajectory.npz`` and the ``meta.json`` beside it, checked for every key the replay reads."""
    path = pathlib.Path(path)
    meta_path = path.with_name("meta.json")
    for file in (path, meta_path):
        if not file.is_file():
            raise TrajectoryError(f"{file}: not found (a trajectory is trajectory.npz with meta.json beside it)")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise TrajectoryError(f"{path}: cannot be read ({err})") from err
    missing = [k for k in META if k not in meta]
    if missing:
        raise TrajectoryError(f"{meta_path}: missing {missing}")
    missing = [k for k in PER_STEP if k not in arrays]
    if missing or not any(k.startswith("init/") for k in arrays) or not any(k.startswith("final/") for k in arrays):
        raise TrajectoryError(f"{path}: missing {missing or 'init/* or final/* state'}")
    steps, batch = int(meta["steps"]), int(meta["batch"])
    for key in PER_STEP:
        if arrays[key].shape[0] != steps or (key.endswith(("_u8", "_box", "_mask")) and arrays[key].shape[1] != batch):
            raise TrajectoryError(f"{path}: {key} has shape {arrays[key].shape} for {steps} steps of batch {batch}")
    return Trajectory(path, meta, arrays)


def replay_config(config: ml_collections.ConfigDict, trajectory: Trajectory) -> ml_collections.ConfigDict:
    """``config`` (the recorded model's, e.g. ``configs/grm.py:tiny``) with the recording's training settings:
    its learning rate, multiplier, weight decay, clipping and loss weights, its batch, DropPath off, and its one
    learning-rate drop (×0.1) after ``drop_after`` steps (one step per epoch, at most one drop)."""
    m, config = trajectory.meta, ml_collections.ConfigDict(config.to_dict())
    config.model.drop_path_rate = 0.0
    t = config.train
    t.lr, t.backbone_multiplier, t.weight_decay = float(m["lr"]), float(m["backbone_multiplier"]), float(
        m["weight_decay"])
    t.grad_clip_norm, t.giou_weight, t.l1_weight = float(m["grad_clip_norm"]), float(m["giou_weight"]), float(
        m["l1_weight"])
    t.batch_size, t.max_steps = int(m["batch"]), trajectory.steps
    t.lr_drop_epoch, t.lr_max_drops = int(m["drop_after"]), 1
    t.sync_batch_stats, t.parallel = False, "pmap"
    return config


def step_batch(trajectory: Trajectory, step: int) -> dict:
    """The train step's batch of recorded step ``step``, with a leading device axis of 1."""
    a = trajectory.arrays
    batch = dict(template=np.stack([normalize_image(im) for im in a["template_u8"][step]]),
                 search=np.stack([normalize_image(im) for im in a["search_u8"][step]]),
                 template_mask=a["template_mask"][step].astype(np.float32),
                 search_anno=a["search_box"][step].astype(np.float32),
                 gumbel_noise=np.transpose(a["gumbel_noise"][step], (1, 0, 2, 3)).astype(np.float32))
    return {k: v[None] for k, v in batch.items()}


def replay(config: ml_collections.ConfigDict, trajectory: Trajectory) -> dict:
    """Run every recorded step; returns per-step ``metrics`` (the train step's), ``param_norm`` (steps, P) in the
    recording's parameter order, and the ``final`` state dict (official keys)."""
    config = replay_config(config, trajectory)
    model = build_model(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example_inputs(config)))
    try:
        variables = state_dict_to_variables(trajectory.state_dict("init"), shapes)
    except ValueError as err:
        raise TrajectoryError(f"{trajectory.path}: its init/* state does not fit the config's model ({err})") from err
    steps_per_epoch = 1
    optimizer = make_optimizer(config, variables["params"], steps_per_epoch)
    state = create_state(variables["params"], variables["batch_stats"], optimizer)
    devices = jax.local_devices()[:1]
    runner = RUNNERS[config.train.parallel](model, optimizer, config, steps_per_epoch, devices)
    state, key = runner.place_state(state), runner.place_key(jax.random.PRNGKey(config.train.seed))
    names = list(trajectory.meta["param_names"])
    metrics, norms = [], []
    for step in range(trajectory.steps):
        state, out = runner(state, step_batch(trajectory, step), key)
        metrics.append({k: np.asarray(v, np.float64) for k, v in runner.first_replica(out).items()})
        current = variables_to_state_dict({"params": runner.first_replica(state.params), "batch_stats": {}})
        norms.append([float(np.linalg.norm(current[n].astype(np.float64))) for n in names])
    final = variables_to_state_dict({"params": runner.first_replica(state.params),
                                     "batch_stats": runner.first_replica(state.batch_stats)})
    return dict(metrics=metrics, param_norm=np.asarray(norms), final=final)


def noise_driven(keys) -> set[str]:
    """State-dict keys whose trained value follows float32 rounding noise rather than the data: the bias of a
    convolution followed by BatchNorm (``X.0.bias`` with ``X.1.running_mean``; in the CENTER head's
    ``conv{1..4}_{ctr,size,offset}``) and that BatchNorm's running mean.

    In ``train()`` mode BatchNorm subtracts the batch mean, so the loss does not depend on such a bias: its
    gradient is zero up to rounding (tiny GRM, step 0: 4e-6 and 3e-7 for two of them, against 22.6 for the same
    convolution's weight). Adam divides the gradient by its own running magnitude, so each step still moves the bias
    by up to about the learning rate, in a direction set by the rounding noise of whichever implementation runs it,
    and the running mean, which averages the convolution's output, takes those moves in. Two correct float32
    implementations therefore differ there by up to 2·Σ lr per element, whatever their other agreement;
    :func:`compare` bounds these tensors by that instead of by ``tensor`` / ``bn``.
    """
    keys = set(keys)
    biases = {k for k in keys if k.endswith(".0.bias") and k[: -len(".0.bias")] + ".1.running_mean" in keys}
    return biases | {k[: -len(".0.bias")] + ".1.running_mean" for k in biases}


def relative(ours, ref) -> float:
    """‖ours − ref‖ / ‖ref‖ (float64; the absolute difference where ‖ref‖ = 0)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.linalg.norm(ref)
    diff = np.linalg.norm(ours - ref)
    return float(diff / scale) if scale > 0 else float(diff)


def compare(replayed: dict, trajectory: Trajectory, tolerances: dict | None = None) -> dict:
    """Per-step rows and the final-state figures, each with whether it is within its tolerance."""
    tol = dict(TOLERANCES, **(tolerances or {}))
    a, rows = trajectory.arrays, []
    names = list(trajectory.meta["param_names"])
    for step, m in enumerate(replayed["metrics"]):
        losses = {k: relative(m[v], a[k][step]) for k, v in LOSSES.items()}
        row = dict(step=step, **losses, iou=abs(float(m["IoU"]) - float(a["iou"][step])),
                   grad_norm=relative(m["grad_norm"], a["grad_norm"][step]),
                   lr=max(relative(m[g], a["lr"][step][i]) for i, g in enumerate(LR_GROUPS)),
                   param_norm=relative(replayed["param_norm"][step], a["param_norm"][step]),
                   loss_value=float(m["Ls/total"]), grad_norm_value=float(m["grad_norm"]))
        limit = tol["loss_first"] if step == 0 else tol["loss"]
        row["ok"] = (max(losses.values()) <= limit and row["iou"] <= tol["iou"]
                     and row["grad_norm"] <= tol["grad_norm"] and row["lr"] <= tol["lr"])
        rows.append(row)
    final, ref = replayed["final"], trajectory.state_dict("final")
    ref = {k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(ref) - set(final))
    if missing:
        raise TrajectoryError(f"{trajectory.path}: final/* keys the model does not have: {missing[:5]}")
    vector = relative(np.concatenate([final[n].ravel() for n in names]),
                      np.concatenate([ref[n].ravel() for n in names]))
    noisy = noise_driven(ref)
    per_tensor = {n: relative(final[n], ref[n]) for n in names if n not in noisy}
    bn = {k: relative(final[k], ref[k]) for k in ref if k.endswith(("running_mean", "running_var")) and k not in noisy}
    noise_bound = 2 * float(np.sum(np.max(a["lr"], axis=1)))
    noise = {k: float(np.abs(final[k].astype(np.float64) - ref[k]).max()) for k in sorted(noisy)}
    start, kept = trajectory.state_dict("init"), [n for n in names if n not in noisy]
    flat = lambda d: np.concatenate([d[n].ravel().astype(np.float64) for n in kept])  # noqa: E731
    moved = float(np.linalg.norm(flat(final) - flat(ref)) / max(np.linalg.norm(flat(ref) - flat(start)), 1e-30))
    worst_tensor = max(per_tensor, key=per_tensor.get)
    worst_bn = max(bn, key=bn.get) if bn else None
    worst_noise = max(noise, key=noise.get) if noise else None
    summary = dict(params=vector, moved=moved, worst_tensor=(worst_tensor, per_tensor[worst_tensor]),
                   worst_bn=(worst_bn, bn[worst_bn]) if bn else None, noise_bound=noise_bound,
                   worst_noise=(worst_noise, noise[worst_noise]) if noise else None)
    summary["ok"] = (vector <= tol["params"] and moved <= tol["moved"] and per_tensor[worst_tensor] <= tol["tensor"]
                     and (not bn or bn[worst_bn] <= tol["bn"]) and (not noise or noise[worst_noise] <= noise_bound)
                     and all(r["ok"] for r in rows))
    return dict(rows=rows, final=summary, tolerances=tol)


def format_report(result: dict) -> str:
    """The per-step table and the final-state lines (relative errors)."""
    lines = ["relative errors, except |ΔIoU| (absolute)",
             f"{'step':>4} {'loss':>10} {'Δtotal':>9} {'Δgiou':>9} {'Δl1':>9} {'Δloc':>9} {'|ΔIoU|':>9} "
             f"{'grad norm':>10} {'Δgrad':>9} {'Δlr':>9} {'Δ‖θ‖':>9}  ok", "-" * 108]
    for r in result["rows"]:
        lines.append(f"{r['step']:>4} {r['loss_value']:>10.5f} {r['loss_total']:>9.2e} {r['loss_giou']:>9.2e} "
                     f"{r['loss_l1']:>9.2e} {r['loss_loc']:>9.2e} {r['iou']:>9.2e} {r['grad_norm_value']:>10.4f} "
                     f"{r['grad_norm']:>9.2e} {r['lr']:>9.2e} {r['param_norm']:>9.2e}  {'yes' if r['ok'] else 'NO'}")
    f, tol = result["final"], result["tolerances"]
    lines += ["", f"final parameters, one vector: {f['params']:.2e} (tolerance {tol['params']:g}); of the way "
              f"training moved them: {f['moved']:.2e} (tolerance {tol['moved']:g})",
              f"worst parameter tensor: {f['worst_tensor'][0]} {f['worst_tensor'][1]:.2e} "
              f"(tolerance {tol['tensor']:g})"]
    if f["worst_bn"]:
        lines.append(f"worst BatchNorm statistic: {f['worst_bn'][0]} {f['worst_bn'][1]:.2e} (tolerance {tol['bn']:g})")
    if f["worst_noise"]:
        lines.append(f"rounding-driven (conv bias before BatchNorm, its running mean): largest |difference| "
                     f"{f['worst_noise'][1]:.2e} at {f['worst_noise'][0]} (bound 2·Σlr = {f['noise_bound']:.2e})")
    lines.append("all within tolerance" if f["ok"] else "NOT within tolerance")
    return "\n".join(lines)
