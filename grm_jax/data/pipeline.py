"""The training input pipeline: sample i of the stream is a pure function of (seed, i); grain runs it in parallel.

Sample i (:func:`make_example`): attempt a = 0, 1, ... draws with ``np.random.default_rng([tag, seed, i, a])`` a
pair (``sampling.sample_pair``), reads its two frames and processes them (``transforms.process_pair``); the first
attempt that yields a valid sample wins (official "repeat until valid"; an unavailable frame counts as invalid).

Batches: with per-device batch b, D local devices and P processes the global batch is G = b·D·P samples; step s
consumes samples s·G .. (s+1)·G − 1, process p takes the contiguous slice starting at s·G + p·b·D and device d of
that process the b samples after p·b·D + d·b. So the batch of step s depends only on (seed, s, b, D, P, p): a run
resumed at step k sees exactly the batches of the uninterrupted run, whatever the number of worker processes.

:func:`make_train_batches` wraps this in ``grain.MapDataset.range(start, stop).map(host batch of step)`` →
``to_iter_dataset`` → ``mp_prefetch`` (worker processes, each computing whole batches; grain returns them in step
order). No TensorFlow and no JAX in the workers' work: NumPy and OpenCV only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence

import cv2
import grain
import jax
import numpy as np
from absl import flags

from grm_jax.data.sampling import sample_pair
from grm_jax.data.source import FrameUnavailableError
from grm_jax.data.transforms import AugmentOptions, CropSettings, process_pair

log = logging.getLogger(__name__)

BATCH_KEYS = ("template", "search", "template_mask", "template_anno", "search_anno")
_SEED_TAG = 0x6A7A  # separates the data streams from other users of config.train.seed
NO_END = 2**40  # "forever" for the step range


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """What one sample needs besides its sources: dataset ratios, the causal interval, crops, augmentation."""

    ratios: tuple
    max_interval: int = 200
    template: CropSettings = CropSettings(2.0, 128)
    search: CropSettings = CropSettings(4.0, 256, 3.0, 0.25)
    options: AugmentOptions = AugmentOptions()
    patch_size: int = 16
    max_attempts: int = 100


#: The ``config.data`` keys that set an :class:`AugmentOptions` field of the same name (the options outside the
#: official recipe, and the per-crop flip quirk).
CONFIG_AUGMENT_KEYS = ("channel_shuffle_prob", "independent_crop_flip", "colour_jitter", "transpose_prob",
                       "aspect_jitter", "colour_rotation_prob")


def augment_from_config(data) -> AugmentOptions:
    """The official :class:`AugmentOptions` with the fields that ``config.data`` (``data``) sets; a key missing from an
    older config keeps the field's default."""
    default = AugmentOptions()
    return dataclasses.replace(default, **{key: type(getattr(default, key))(data[key])
                                           for key in CONFIG_AUGMENT_KEYS if key in data})


def settings_from_config(config, num_sources: int | None = None,
                         augment: AugmentOptions | None = None) -> SampleSettings:
    """``config.data.*`` (and ``config.model.patch_size``) → :class:`SampleSettings`.

    ``num_sources`` = 1 with several configured datasets means "one source given": ratio (1,). ``augment``
    replaces :func:`augment_from_config`'s options; mean and std always come from the config.
    """
    d = config.data
    ratios = tuple(float(r) for r in d.ratios)
    if num_sources is not None and num_sources != len(ratios):
        if num_sources != 1:
            raise ValueError(f"{num_sources} sources for {len(ratios)} ratios in config.data.ratios")
        ratios = (1.0,)

    def crop(c):
        return CropSettings(float(c.factor), int(c.size), float(c.center_jitter), float(c.scale_jitter))

    return SampleSettings(
        ratios=ratios, max_interval=int(d.max_sample_interval), template=crop(d.template), search=crop(d.search),
        options=dataclasses.replace(augment or augment_from_config(d),
                                    mean=tuple(float(v) for v in d.mean), std=tuple(float(v) for v in d.std)),
        patch_size=int(config.model.patch_size) if "model" in config else 16)


def sample_rng(seed: int, index: int, attempt: int) -> np.random.Generator:
    """The generator of attempt ``attempt`` of sample ``index``."""
    return np.random.default_rng([_SEED_TAG, int(seed) & (2**63 - 1), int(index), int(attempt)])


def make_example(sources: Sequence, settings: SampleSettings, seed: int, index: int) -> dict:
    """Sample ``index`` of the stream with seed ``seed`` (module docstring); raises after ``max_attempts``."""
    for attempt in range(settings.max_attempts):
        rng = sample_rng(seed, index, attempt)
        pair = sample_pair(rng, sources, settings.ratios, settings.max_interval)
        source = sources[pair.dataset]
        try:
            template_image, template_box = source.frame(pair.sequence, pair.template_frame)
            if pair.search_frame == pair.template_frame:
                search_image, search_box = template_image, template_box
            else:
                search_image, search_box = source.frame(pair.sequence, pair.search_frame)
            sample = process_pair(rng, template_image, template_box, search_image, search_box, settings.template,
                                  settings.search, settings.options, settings.patch_size)
        except (FrameUnavailableError, OSError, cv2.error) as e:  # official: a failing load ⇒ resample
            log.debug("sample %d attempt %d: %s", index, attempt, e)
            continue
        if sample is not None:
            return sample
    raise RuntimeError(f"sample {index}: no valid pair in {settings.max_attempts} attempts")


def host_sample_indices(step: int, per_device: int, num_devices: int, process_index: int = 0,
                        process_count: int = 1) -> np.ndarray:
    """(num_devices, per_device) global sample indices of this process's share of step ``step``."""
    local = per_device * num_devices
    start = step * local * process_count + process_index * local
    return (start + np.arange(local, dtype=np.int64)).reshape(num_devices, per_device)


def make_host_batch(sources: Sequence, settings: SampleSettings, seed: int, step: int, per_device: int,
                    num_devices: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's batch of step ``step``: each of ``BATCH_KEYS`` as (num_devices, per_device, ...)."""
    indices = host_sample_indices(step, per_device, num_devices, process_index, process_count)
    samples = [make_example(sources, settings, seed, int(i)) for i in indices.reshape(-1)]
    return {key: np.stack([s[key] for s in samples]).reshape(indices.shape + samples[0][key].shape)
            for key in BATCH_KEYS}


@dataclasses.dataclass(frozen=True)
class HostBatchFn:
    """Picklable ``step → host batch`` (grain sends it to its worker processes)."""

    sources: tuple
    settings: SampleSettings
    seed: int
    per_device: int
    num_devices: int
    process_index: int = 0
    process_count: int = 1

    def __call__(self, step: int) -> dict:
        return make_host_batch(self.sources, self.settings, self.seed, int(step), self.per_device, self.num_devices,
                               self.process_index, self.process_count)


def resolve_sources(config, sources) -> tuple:
    """Sources in the order of ``config.data.datasets``: a mapping name → source, a sequence aligned with the
    configured datasets, or a single source (then the only dataset, ratio 1)."""
    if isinstance(sources, Mapping):
        missing = [name for name in config.data.datasets if name not in sources]
        if missing:
            raise KeyError(f"no source for configured datasets {missing}")
        return tuple(sources[name] for name in config.data.datasets)
    if hasattr(sources, "frame"):
        return (sources,)
    return tuple(sources)


def make_batch_dataset(config, sources, start_step: int = 0, num_devices: int = 1, process_index: int = 0,
                       process_count: int = 1, num_steps: int | None = None,
                       augment: AugmentOptions | None = None) -> grain.MapDataset:
    """``grain.MapDataset`` whose element k is this process's batch of step ``start_step + k``."""
    sources = resolve_sources(config, sources)
    settings = settings_from_config(config, len(sources), augment)
    fn = HostBatchFn(sources, settings, int(config.train.seed), int(config.train.batch_size), int(num_devices),
                     int(process_index), int(process_count))
    stop = start_step + (NO_END if num_steps is None else int(num_steps))
    return grain.MapDataset.range(int(start_step), stop).map(fn)


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests, scripts) use their defaults."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_batches(config, sources, start_step: int = 0, num_devices: int | None = None,
                       process_index: int | None = None, process_count: int | None = None, *,
                       num_workers: int | None = None, num_threads: int = 1, buffer_size: int = 2,
                       num_steps: int | None = None, augment: AugmentOptions | None = None) -> Iterator[dict]:
    """Iterator over this process's training batches from step ``start_step`` on (the pmap input).

    Each batch is a dict of NumPy arrays shaped (num_devices, config.train.batch_size, ...): ``template``
    (…, Ht, Wt, 3) and ``search`` (…, Hs, Ws, 3) float32 normalised NHWC, ``template_mask`` (…, Nz) float32,
    ``template_anno`` and ``search_anno`` (…, 4) float32 normalised x1, y1, w, h. Defaults: ``num_devices`` =
    ``jax.local_device_count()``, ``process_index``/``process_count`` from JAX, ``num_workers`` =
    ``config.data.num_workers`` (0: no worker processes). ``num_threads`` threads per process compute batches
    ahead (``buffer_size`` per worker); neither changes the stream. ``num_steps`` limits the iterator (default:
    endless). ``augment`` switches augmentations and official quirks (:class:`transforms.AugmentOptions`).
    """
    if num_devices is None or process_index is None or process_count is None:
        num_devices = jax.local_device_count() if num_devices is None else num_devices
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    dataset = make_batch_dataset(config, sources, start_step, num_devices, process_index, process_count, num_steps,
                                 augment)
    workers = int(config.data.num_workers if num_workers is None else num_workers)
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=max(int(num_threads), 1),
                                                         prefetch_buffer_size=max(int(buffer_size), 1)))
    if workers > 0:
        _ensure_absl_flags_parsed()
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                                     per_worker_buffer_size=max(buffer_size, 1)))
    return iter(iterable)
