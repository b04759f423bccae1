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
import ml_collections
import numpy as np
from tqdm import tqdm

from grm_jax import checkpoints, memory
from grm_jax.convert.pos_embed import derive_track_tables, sincos_pos_embed
from grm_jax.models import build_model, example_inputs, host_init
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


def initial_variables(config, model) -> dict:
    """The variables training starts from: fresh ones (seed ``config.train.seed``) or those of
    ``config.train.init_checkpoint``, then the initialisation options (``train.divide_init_bias``,
    ``train.pos_embed_init``). Also the "untrained" baseline of ``train.py``'s evaluation."""
    variables = host_init(model, *example_inputs(config), seed=config.train.seed)
    if config.train.init_checkpoint:
        loaded, _ = checkpoints.load_variables(config.train.init_checkpoint)
        variables = {**variables, **loaded}
    params = variables["params"]
    if config.train.divide_init_bias:
        params = with_divide_bias(params, config.train.divide_init_bias)
    if config.train.pos_embed_init == "sincos" and not config.train.init_checkpoint:
        params = with_sincos_pos_embed(params, config.model)
    return {**variables, "params": params}


def init_train_state(config, model, optimizer_factory) -> TrainState:
    """The train state at step 0 on the host: :func:`initial_variables` and the optimizer's initial state
    (:func:`train` builds the same on the devices, ``runner.init_state``)."""
    variables = initial_variables(config, model)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return create_state(params, batch_stats, optimizer_factory(params))


def abstract_train_state(variables: dict, optimizer) -> TrainState:
    """The shapes and dtypes of the step-0 state for ``variables`` (``jax.ShapeDtypeStruct`` leaves, no arrays)."""
    return jax.eval_shape(lambda v: create_state(v["params"], v["batch_stats"], optimizer), variables)


def with_sincos_pos_embed(params, m):
    """``params`` with the backbone's position tables set to MAE's 2-D sine-cosine table (a from-scratch start like
    the one a pretrained MAE backbone gives): ``pos_embed`` = :func:`~grm_jax.convert.pos_embed.sincos_pos_embed`
    on the ``pos_embed_grid``² grid, and ``pos_embed_z`` / ``pos_embed_x`` resized from it to the template and
    search grids as the official ``finetune_track`` derives them (:func:`~grm_jax.convert.pos_embed.
    derive_track_tables`). The tables stay trainable, as in GRM."""
    table = sincos_pos_embed(m.embed_dim, m.pos_embed_grid)
    return {**params, "backbone": {**params["backbone"], "pos_embed": table, **derive_track_tables(table, m)}}


def with_divide_bias(params, bias: float):
    """``params`` with ``bias`` added to the *interact* logit (class 1) of every division MLP's output layer
    (``divide_predict_4``): the initial ℓ1 − ℓ0 of every token moves by ``bias``, so that a positive value starts
    training with (almost) every search token interacting — e^−b/(1 + e^−b) of them drawn search-only by the Gumbel
    noise — instead of the noise's even split."""

    def shift(path, x):
        names = [getattr(k, "key", None) for k in path]
        if len(names) >= 2 and names[-2] == "divide_predict_4" and names[-1] == "bias":
            return np.asarray(x) + np.array([0.0, bias], x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(shift, params)


def _host_tree(runner, state: TrainState) -> dict:
    """This process's first-device copy of the state (what :class:`TrainResult` returns)."""
    first = runner.first_replica(state)
    return dict(step=np.asarray(first.step), params=first.params, batch_stats=first.batch_stats,
                opt_state=first.opt_state)


def _batch_summary(batch: dict) -> dict:
    return {k: dict(mean=float(np.mean(v)), std=float(np.std(v)), min=float(np.min(v)), max=float(np.max(v)),
                    finite=bool(np.all(np.isfinite(v)))) for k, v in batch.items()}


@dataclasses.dataclass
class _Window:
    """The steps run since the last check, with their metrics still on the devices.

    Nothing is fetched per step: :meth:`check` fetches the window's losses at log and save steps (and at the end)
    and raises :class:`NonFiniteLossError` naming the first non-finite step, so a NaN is never checkpointed. The
    batch of that step is read again for the report (a batch is a function of its step: ``make_batches(step)``).
    """

    runner: object
    workdir: pathlib.Path
    make_batches: Callable
    steps: list = dataclasses.field(default_factory=list)

    def add(self, step: int, metrics) -> None:
        self.steps.append((step, metrics))

    def check(self) -> dict | None:
        """The host metrics of the window's last step (None for an empty window); raises on a non-finite loss."""
        if not self.steps:
            return None
        losses = [float(self.runner.first_replica(m["Ls/total"])) for _, m in self.steps]
        first, last = self.steps[0][0], self.steps[-1][0]
        for (step, metrics), loss in zip(self.steps, losses):
            if not math.isfinite(loss):
                path = self.workdir / f"nonfinite_step{step}.json"
                batch = _batch_summary(next(self.make_batches(step)))  # this process's part of the batch
                path.write_text(json.dumps(dict(step=step, checked_steps=[first, last],
                                                metrics=_jsonable(self.runner.first_replica(metrics)), batch=batch),
                                           indent=1))
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step} (the first non-finite one of steps {first}-{last}, checked "
                    f"after step {last}); batch statistics and metrics in {path}; no checkpoint written from it")
        last_metrics = self.runner.first_replica(self.steps[-1][1])
        self.steps.clear()
        return last_metrics


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
    num_devices = len(devices) * jax.process_count()  # the global data-parallel axis
    per_epoch = steps_per_epoch(config, num_devices)
    last_step = total_steps(config, num_devices)
    t = config.train
    model = build_model(config, bn_axis_name=AXIS if t.sync_batch_stats else None)
    variables = initial_variables(config, model)  # host arrays: the parameters, not yet the optimizer's state
    optimizer = make_optimizer(config, variables["params"], per_epoch)
    per_device_stats = num_devices > 1 and not t.sync_batch_stats
    if t.parallel not in RUNNERS:
        raise ValueError(f"config.train.parallel = {t.parallel!r} is not one of {list(RUNNERS)}")
    runner = RUNNERS[t.parallel](model, optimizer, config, per_epoch, devices)
    shapes = runner.abstract_state(abstract_train_state(variables, optimizer))
    seed_key = runner.place_key(jax.random.PRNGKey(t.seed))

    manager = checkpoints.make_manager(workdir, config, per_epoch)
    # The step is compiled from shapes before the state exists, so that the compiler's working memory and the state
    # are not resident together (the batch shapes come from the first batch of the step the run will likely resume
    # at; batches do not depend on the step in their shapes, so another resume step only rebuilds the iterator).
    start = max(manager.all_steps(), default=0)
    batches = make_batches(start)
    first = next(batches) if start < last_step else None
    if first is not None:
        runner.compile(shapes, first, seed_key)
        memory.release_free_memory()  # the compiler's working memory (grm_jax/memory.py)
    # Per-device BatchNorm statistics restore only onto the device count that wrote them; on another count (or
    # where this run synchronises them) every device starts from device 0's statistics, which is what the official
    # trainer's resume gives every rank (it saves rank 0's model).
    target = runner.abstract_global_state(shapes, per_device_stats)  # shapes and shardings, no arrays
    restored, warnings, notes = checkpoints.restore_latest(manager, target, optional=("batch_stats_per_device",))
    for message in warnings:
        print(f"warning: {message}")
    for message in notes:
        print(f"note: {message}; every device starts from the checkpoint's device-0 BatchNorm statistics")
    if restored is not None:
        state = runner.local_state(restored, TrainState)
        print(f"resuming from step {int(runner.first_replica(state.step))} ({manager.directory})")
    else:
        state = runner.init_state(variables["params"], variables["batch_stats"], optimizer)
    # The host copy of the variables is garbage now; its blocks stay resident inside malloc's heap unless handed
    # back (grm_jax/memory.py).
    del variables, restored
    memory.release_free_memory()
    resumed_at = int(runner.first_replica(state.step))
    if resumed_at != start:  # the newest checkpoint was damaged and an earlier one restored, or there was none
        start = resumed_at
        batches = make_batches(start)
        first = next(batches) if start < last_step else None
    is_main = jax.process_index() == 0
    history = []
    writer = _open_writer(workdir) if is_main else None
    bar = tqdm(total=last_step, initial=start, desc="train", disable=not (progress and is_main), unit="step")
    window_start, window_samples = time.perf_counter(), 0
    window = _Window(runner, workdir, make_batches)
    in_flight = None  # the previous step's metrics: at most one step runs while the host prepares the next
    batch = runner.place_batch(first) if first is not None else None
    with _Preemption() as preemption:
        for step in range(start, last_step):
            state, metrics = runner(state, batch, seed_key)  # dispatched; runs while the host goes on
            if step == start:
                memory.release_free_memory()  # the first call's allocations (and the compiler's, had it compiled)
            window.add(step, metrics)
            window_samples += config.train.batch_size * num_devices
            done = step + 1
            # The next batch is read and put on the devices while this step runs.
            batch = runner.place_batch(next(batches)) if done < last_step else None
            if in_flight is not None:
                jax.block_until_ready(in_flight)
            in_flight = metrics
            bar.update(1)
            stop = preemption.requested
            log_now = done % t.log_every_steps == 0 or done == last_step
            save_now = done % t.checkpoint_every_steps == 0 or done == last_step or stop
            if log_now or save_now:
                latest = window.check()  # raises on a non-finite loss: nothing of it is logged or saved
                if log_now:
                    elapsed = time.perf_counter() - window_start
                    record = dict(step=done, epoch=done / per_epoch, samples_per_s=window_samples / elapsed,
                                  **_jsonable(latest))
                    history.append(record)
                    window_start, window_samples = time.perf_counter(), 0
                    bar.set_postfix(loss=f"{record['Ls/total']:.3f}", iou=f"{record['IoU']:.3f}")
                    if writer is not None:
                        _write_record(workdir, writer, record)
            if save_now:
                # every process saves; the checkpoint's tree is the state's own buffers, handed back after the save
                tree = runner.global_state(state, per_device_stats)
                checkpoints.save_train_state(manager, tree, config)
                state = runner.local_state(tree, TrainState)
                del tree
            if stop:
                print(f"SIGTERM: saved step {done}; stopping")
                break
    bar.close()
    if writer is not None:
        writer.close()
    manager.close()
    return TrainResult(state=_host_tree(runner, state), history=history, workdir=workdir,
                       preempted=preemption.requested)


def _jsonable(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        value = np.asarray(value)
        out[key] = value.tolist() if value.ndim else float(value)
    return out


def _open_writer(workdir: pathlib.Path):
    from tensorboardX import SummaryWriter  # here: ~1 s to import, needed by process 0 of a training run only

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
