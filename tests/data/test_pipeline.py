"""Tests of grm_jax/data/pipeline.py: determinism, resume, per-device/per-host layout, worker independence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from grm_jax.config import base_config
from grm_jax.data import pipeline
from grm_jax.data.datasets import make_builder, prepare, synthetic_config
from grm_jax.data.source import DatasetSource, MemorySource

SEQ = dict(min_length=24, max_length=40, height=64, width=80)


def small_config(batch_size=2, workers=0):
    """The official recipe with small crops (template 32, search 64) and a synthetic dataset."""
    config = base_config()
    config.data.datasets = ("SYNTHETIC",)
    config.data.ratios = (1.0,)
    config.model.template_size = 32
    config.model.search_size = 64
    config.train.batch_size = batch_size
    config.train.seed = 3
    config.data.num_workers = workers
    return config


@pytest.fixture(scope="module")
def source():
    return MemorySource.synthetic(5, seed=1, jpeg_quality=None, **SEQ)


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_example_is_a_function_of_seed_and_index(source):
    settings = pipeline.settings_from_config(small_config(), 1)
    a = pipeline.make_example([source], settings, 3, 17)
    b = pipeline.make_example([source], settings, 3, 17)
    for key in pipeline.BATCH_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    c = pipeline.make_example([source], settings, 3, 18)
    d = pipeline.make_example([source], settings, 4, 17)
    assert not np.array_equal(a["search"], c["search"]) and not np.array_equal(a["search"], d["search"])


def test_settings_take_the_augmentation_options_of_the_config():
    config = small_config()
    official = pipeline.settings_from_config(config, 1).options
    assert (official.channel_shuffle_prob, official.independent_crop_flip, official.colour_jitter,
            official.transpose_prob, official.aspect_jitter, official.colour_rotation_prob) == (0.0, True, 0.0, 0.0,
                                                                                                  0.0, 0.0)
    config.data.channel_shuffle_prob = 0.5
    config.data.independent_crop_flip = False
    config.data.colour_jitter = 0.25
    config.data.transpose_prob = 0.5
    config.data.aspect_jitter = 0.3
    config.data.colour_rotation_prob = 0.75
    chosen = pipeline.settings_from_config(config, 1).options
    assert (chosen.channel_shuffle_prob, chosen.independent_crop_flip, chosen.colour_jitter,
            chosen.transpose_prob, chosen.aspect_jitter, chosen.colour_rotation_prob) == (0.5, False, 0.25, 0.5,
                                                                                          0.3, 0.75)


def test_batch_shapes_and_dtypes(source):
    config = small_config(batch_size=3)
    batch = next(pipeline.make_train_batches(config, [source], 0, num_devices=2, process_index=0, process_count=1))
    expected = {"template": (2, 3, 32, 32, 3), "search": (2, 3, 64, 64, 3), "template_mask": (2, 3, 4),
                "template_anno": (2, 3, 4), "search_anno": (2, 3, 4)}
    assert {k: v.shape for k, v in batch.items()} == expected
    assert all(v.dtype == np.float32 for v in batch.values())
    assert np.all(batch["template_mask"].sum(-1) >= 1)  # every template box covers a patch


def test_resume_equals_uninterrupted_stream(source):
    config = small_config()
    full = take(pipeline.make_train_batches(config, [source], 0, 2, 0, 1), 4)
    resumed = take(pipeline.make_train_batches(config, [source], 2, 2, 0, 1), 2)
    assert_batches_equal(full[2:], resumed)
    assert not np.array_equal(full[0]["search"], full[1]["search"])


def test_hosts_split_the_global_batch(source):
    """Two processes with 2 devices each see exactly what one process with 4 devices sees, in order."""
    config = small_config()
    single = take(pipeline.make_train_batches(config, [source], 0, 4, 0, 1), 2)
    host0 = take(pipeline.make_train_batches(config, [source], 0, 2, 0, 2), 2)
    host1 = take(pipeline.make_train_batches(config, [source], 0, 2, 1, 2), 2)
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(host0, host1)]
    assert_batches_equal(single, joined)


def test_sample_index_layout():
    np.testing.assert_array_equal(pipeline.host_sample_indices(3, 2, 2, 1, 2), [[28, 29], [30, 31]])
    np.testing.assert_array_equal(pipeline.host_sample_indices(0, 3, 1), [[0, 1, 2]])


def test_worker_processes_give_the_same_batches(source):
    """0, 1 and 2 worker processes: identical batches (each batch is a pure function of its step)."""
    config = small_config()
    runs = []
    for workers in (0, 1, 2):
        iterator = pipeline.make_train_batches(config, [source], 1, 2, 0, 1, num_workers=workers, num_threads=2,
                                               num_steps=3)
        runs.append(list(iterator))
    assert len(runs[0]) == 3
    assert_batches_equal(runs[0], runs[1])
    assert_batches_equal(runs[0], runs[2])


def test_ratios_pick_sources(source):
    """Two sources with ratios (1, 0): only the first is ever used (the second one's frames would be black)."""
    black = MemorySource([(np.zeros((30, 64, 80, 3), np.uint8), np.tile([20.0, 20, 20, 20], (30, 1)),
                           np.ones(30, bool))])
    config = small_config()
    config.data.datasets = ("A", "B")
    config.data.ratios = (1.0, 0.0)
    batch = next(pipeline.make_train_batches(config, {"A": source, "B": black}, 0, 1, 0, 1))
    assert np.all(batch["template"].std(axis=(2, 3, 4)) > 0.1)  # textured, not constant black crops
    config.data.ratios = (0.0, 1.0)
    batch = next(pipeline.make_train_batches(config, {"A": source, "B": black}, 0, 1, 0, 1))
    # Black frames normalise to −mean/std in every channel; padding is black too.
    np.testing.assert_allclose(batch["template"][0, 0, 0, 0], -np.array(config.data.mean) / np.array(config.data.std),
                               rtol=1e-6)


def test_prepared_dataset_gives_the_same_batches_as_memory(tmp_path):
    """A prepared synthetic dataset and MemorySource.synthetic with the same seed hold the same JPEG bytes, so the
    pipeline produces identical batches from either."""
    builder = prepare(make_builder("synthetic_tracking", tmp_path, config=synthetic_config(4, 1, seed=2, **SEQ)))
    memory = MemorySource.synthetic(4, seed=2, jpeg_quality=90, **SEQ)
    config = small_config()
    a = take(pipeline.make_train_batches(config, [DatasetSource(builder.data_dir)], 0, 2, 0, 1), 2)
    b = take(pipeline.make_train_batches(config, [memory], 0, 2, 0, 1), 2)
    assert_batches_equal(a, b)


def test_unreadable_frames_are_resampled(source):
    """A source whose every other sequence fails to load still yields full batches (official: resample)."""
    from grm_jax.data.source import FrameUnavailableError

    class Flaky:
        is_video, name = True, "flaky"
        num_sequences = source.num_sequences

        def sequence_info(self, i):
            return source.sequence_info(i)

        def frame(self, i, t):
            if i % 2:
                raise FrameUnavailableError("unreadable")
            return source.frame(i, t)

    settings = pipeline.settings_from_config(small_config(), 1)
    sample = pipeline.make_example([Flaky()], settings, 0, 5)
    assert sample["search"].shape == (64, 64, 3)


def test_augment_options_reach_the_samples(source):
    """The template crop is centred on its (unjittered) box, so its GT centre is (out − 1)/(2·out) — or, after the
    per-crop flip, 1 − that = (out + 1)/(2·out). With the crop flip switched off only the first value occurs."""
    from grm_jax.data.transforms import AugmentOptions

    config = small_config(batch_size=8)
    out = config.model.template_size

    def centres(augment):
        batch = next(pipeline.make_train_batches(config, [source], 0, 1, 0, 1, augment=augment))
        anno = batch["template_anno"].reshape(-1, 4)
        return anno[:, 0] + anno[:, 2] / 2

    # float32 outputs of a float64 computation: 1e-6.
    default = centres(None)
    assert np.all(np.minimum(np.abs(default - (out - 1) / (2 * out)), np.abs(default - (out + 1) / (2 * out))) < 1e-6)
    assert np.any(np.abs(default - (out + 1) / (2 * out)) < 1e-6)  # P(no flip in 8) = 1/256; seed fixed
    np.testing.assert_allclose(centres(AugmentOptions(crop_flip_prob=0.0)), (out - 1) / (2 * out), atol=1e-6)
