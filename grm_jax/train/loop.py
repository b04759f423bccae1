"""The training loop: pmap over local devices, Orbax checkpoints with exact resume, logs, NaN guard, SIGTERM save.

Every random choice is a function of ``(seed, step)`` (the data of step k, the Gumbel noise and DropPath masks of
step k), so a run restarted from its checkpoint at step k continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import signal
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from grm_jax import checkpoints as model_checkpoints
from grm_jax.models import build_model, example_inputs, host_init
from grm_jax.train import checkpoint as ckpt
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.parallel import RUNNERS
from grm_jax.train.step import AXIS, TrainState, create_state

log = logging.getLogger(__name__)
BatchFactory = Callable[[int], Iterator[dict]]  # start_step → iterator of host batches (devices, b, ...)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the message names the step and the diagnostic file."""


def steps_per_epoch(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """SAMPLE_PER_EPOCH global samples in batches of batch_size per device, drop_last: ⌊samples/(b·devices)⌋."""
    return max(1, config.data.sample_per_epoch // (config.train.batch_size * num_devices))


def total_steps(config: ml_collections.ConfigDict, num_devices: int) -> int:
    return config.train.max_steps or steps_per_epoch(config, num_devices) * config.train.epochs


@dataclasses.dataclass
class TrainResult:
    state: dict  # host copy: step, params, batch_stats (device 0), opt_state
    history: list  # the logged metric dicts
    workdir: pathlib.Path
    preempted: bool = False  # SIGTERM stopped the run before its last step (the checkpoint is saved)


def init_train_state(config, model, optimizer_factory) -> TrainState:
    """Fresh variables (seed ``config.train.seed``) or those of ``config.train.init_checkpoint``."""
    variables = host_init(model, *example_inputs(config), seed=config.train.seed)
    if config.train.init_checkpoint:
        loaded, _ = model_checkpoints.load_variables(config.train.init_checkpoint)
        variables = {**variables, **loaded}
    params, batch_stats = variables["params"], variables["batch_stats"]
    return create_state(params, batch_stats, optimizer_factory(params))


def _host_tree(runner, state: TrainState, per_device_stats: bool) -> dict:
    """Device-0 copy of the replicated state (+ every device's BatchNorm statistics when they differ)."""
    first = runner.first_replica(state)
    tree = dict(step=np.asarray(first.step), params=first.params, batch_stats=first.batch_stats,
                opt_state=first.opt_state)
    if per_device_stats:  # pmap only: each device's own BatchNorm statistics, for an exact resume
        tree["batch_stats_per_device"] = jax.device_get(state.batch_stats)
    return tree


def _batch_summary(batch: dict) -> dict:
    return {k: dict(mean=float(np.mean(v)), std=float(np.std(v)), min=float(np.min(v)), max=float(np.max(v)),
                    finite=bool(np.all(np.isfinite(v)))) for k, v in batch.items()}


class _Preemption:
    """SIGTERM → finish the current step, save, stop (the checkpoint is resumed by the next start)."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, nothing to restore
            self.previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def train(config: ml_collections.ConfigDict, workdir, make_batches: BatchFactory, *, devices=None,
          progress: bool = True) -> TrainResult:
    """Train ``config`` in ``workdir`` from its latest checkpoint (or from scratch) to the last step."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    devices = devices or jax.local_devices()
    n = len(devices)
    per_epoch = steps_per_epoch(config, n)
    last_step = total_steps(config, n)
    t = config.train
    model = build_model(config, bn_axis_name=AXIS if t.sync_batch_stats else None)
    optimizer_factory = lambda params: make_optimizer(config, params, per_epoch)
    state = init_train_state(config, model, optimizer_factory)
    optimizer = optimizer_factory(state.params)
    per_device_stats = n > 1 and not t.sync_batch_stats
    if t.parallel not in RUNNERS:
        raise ValueError(f"config.train.parallel = {t.parallel!r} is not one of {list(RUNNERS)}")
    runner = RUNNERS[t.parallel](model, optimizer, config, per_epoch, devices)
    target = _host_tree(runner, runner.place_state(state), per_device_stats)

    manager = ckpt.make_manager(workdir, config, per_epoch)
    restored, warnings = ckpt.restore_latest(manager, target)
    for message in warnings:
        print(f"warning: {message}")
    if restored is not None:
        state = TrainState(step=jnp.asarray(restored["step"]), params=restored["params"],
                           batch_stats=restored["batch_stats"], opt_state=restored["opt_state"])
        print(f"resuming from step {int(restored['step'])} ({manager.directory})")
    state = runner.place_state(state)
    if restored is not None and per_device_stats:
        state = state.replace(batch_stats=runner.place_per_device(
            [jax.tree_util.tree_map(lambda x, i=i: x[i], restored["batch_stats_per_device"]) for i in range(n)]))
    seed_key = runner.place_key(jax.random.PRNGKey(t.seed))
    start = int(runner.first_replica(state.step))
    is_main = jax.process_index() == 0
    history = []
    writer = _open_writer(workdir) if is_main else None
    batches = make_batches(start)
    bar = tqdm(total=last_step, initial=start, desc="train", disable=not (progress and is_main), unit="step")
    window_start, window_samples = time.perf_counter(), 0
    with _Preemption() as preemption:
        for step in range(start, last_step):
            batch = next(batches)
            state, metrics = runner(state, batch, seed_key)
            metrics = runner.first_replica(metrics)
            window_samples += config.train.batch_size * n * jax.process_count()
            if not math.isfinite(float(metrics["Ls/total"])):
                path = workdir / f"nonfinite_step{step}.json"
                path.write_text(json.dumps(dict(step=step, metrics=_jsonable(metrics),
                                                batch=_batch_summary(batch)), indent=1))
                raise NonFiniteLossError(f"loss is {float(metrics['Ls/total'])} at step {step}; batch statistics "
                                         f"and metrics in {path}; no checkpoint written for this step")
            done = step + 1
            bar.update(1)
            if done % t.log_every_steps == 0 or done == last_step:
                elapsed = time.perf_counter() - window_start
                record = dict(step=done, epoch=done / per_epoch, samples_per_s=window_samples / elapsed,
                              **_jsonable(metrics))
                history.append(record)
                window_start, window_samples = time.perf_counter(), 0
                bar.set_postfix(loss=f"{record['Ls/total']:.3f}", iou=f"{record['IoU']:.3f}")
                if writer is not None:
                    _write_record(workdir, writer, record)
            if done % t.checkpoint_every_steps == 0 or done == last_step or preemption.requested:
                if is_main:
                    ckpt.save(manager, _host_tree(runner, state, per_device_stats), config)
            if preemption.requested:
                print(f"SIGTERM: saved step {done}; stopping")
                break
    bar.close()
    if writer is not None:
        writer.close()
    manager.close()
    return TrainResult(state=_host_tree(runner, state, per_device_stats), history=history, workdir=workdir,
                       preempted=preemption.requested)


def _jsonable(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        value = np.asarray(value)
        out[key] = value.tolist() if value.ndim else float(value)
    return out


def _open_writer(workdir: pathlib.Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(workdir / "tensorboard"))


def _write_record(workdir: pathlib.Path, writer, record: dict) -> None:
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, list):
            for i, v in enumerate(value):
                writer.add_scalar(f"{key}/layer{i + 1}", v, record["step"])
        else:
            writer.add_scalar(key, value, record["step"])
    writer.flush()
