"""Division statistics and the first-box baseline (grm_jax/evaluate/division.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from grm_jax.data.processing import crop_window
from grm_jax.evaluate import division


def test_token_centres_are_row_major_patch_centres():
    centres = division.token_centres(4, 64)
    np.testing.assert_allclose(centres[:5], [[8, 8], [24, 8], [40, 8], [56, 8], [8, 24]])


def test_box_in_crop_maps_the_previous_box_to_the_crop_centre():
    previous = np.array([100.0, 50.0, 20.0, 30.0])
    crop = division.box_in_crop(previous, previous, 4.0, 128)
    x1, y1, size = crop_window(previous, 4.0)
    scale = 128 / size
    np.testing.assert_allclose(crop, [(100 - x1) * scale, (50 - y1) * scale, 20 * scale, 30 * scale])
    # a box crop_sz/4 to the right lands 32 px (of 128) further right
    moved = division.box_in_crop(previous + [size / 4, 0, 0, 0], previous, 4.0, 128)
    assert moved[0] - crop[0] == pytest.approx(32.0)


def test_stats_count_tokens_inside_and_outside_the_target():
    stats = division.DivisionStats(search_factor=4.0, search_size=64, patch_size=16)
    seq = types.SimpleNamespace(name="s", gt=np.array([[40.0, 40.0, 16.0, 16.0]] * 2))
    stats(seq, 0, None, seq.gt[0], {})
    # The crop around the first box: 64 px of frame → 64 px crop, the target at (24, 24, 16, 16): one token centre
    # (24, 24) lies in it.
    target = division.inside(division.token_centres(4, 64), division.box_in_crop(seq.gt[1], seq.gt[0], 4.0, 64))
    assert np.flatnonzero(target).tolist() == [5]
    decisions = np.zeros((2, 16), np.int8)
    decisions[0, target] = 1  # layer 1: exactly the target interacts
    decisions[1, :] = 1  # layer 2: everything
    stats(seq, 1, None, seq.gt[1], {"decisions": decisions})
    first, second = stats.summary()
    assert (first["inside"], first["outside"], first["interact"], first["ratio"]) == (1.0, 0.0, 1 / 16, float("inf"))
    assert (second["inside"], second["outside"], second["ratio"]) == (1.0, 1.0, 1.0)
    assert "| 1 | 6.2 % | 100.0 % | 0.0 % | inf |" in division.format_division(stats.summary())


def test_keep_first_box_repeats_the_first_box(tmp_path):
    seq = types.SimpleNamespace(name="s", gt=np.array([[1.0, 2.0, 3.0, 4.0], [5, 6, 7, 8]]), frames=["a", "b", "c"])
    division.keep_first_box([seq], "otb", tmp_path)
    assert (tmp_path / "s.txt").read_text() == "1,2,3,4\n" * 3


def test_a_layer_where_nothing_interacts_has_no_ratio():
    stats = division.DivisionStats(search_factor=4.0, search_size=64, patch_size=16)
    seq = types.SimpleNamespace(name="s", gt=np.array([[40.0, 40.0, 16.0, 16.0]] * 2))
    stats(seq, 0, None, seq.gt[0], {})
    stats(seq, 1, None, seq.gt[1], {"decisions": np.zeros((1, 16), np.int8)})
    (row,) = stats.summary()
    assert row["interact"] == 0 and np.isnan(row["ratio"])
