"""grm_jax/evaluate/pairs.py: box errors, the nominal crop, and the rows on generated sequences."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.data.pipeline import make_example, settings_from_config
from grm_jax.data.source import MemorySource
from grm_jax.data.synthetic import Difficulty
from grm_jax.evaluate import pairs
from helpers import load_config


def test_box_errors_of_exact_shifted_and_halved_boxes():
    anno = np.array([[0.25, 0.25, 0.5, 0.5]] * 3)  # x1, y1, w, h
    pred = np.array([[0.5, 0.5, 0.5, 0.5],  # cx, cy, w, h: the same box
                     [0.5, 0.625, 0.5, 0.5],  # shifted down by a quarter of its height
                     [0.5, 0.5, 0.25, 0.25]])  # same centre, half the side
    errs = pairs.box_errors(pred, anno, crop_px=128)
    np.testing.assert_allclose(errs["iou"], [1.0, 0.375 / 0.625, 0.25], rtol=1e-12)
    np.testing.assert_allclose(errs["centre_px"], [0.0, 16.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(errs["log_area"], [0.0, 0.0, np.log(0.25)], atol=1e-12)
    np.testing.assert_allclose(errs["log_aspect_true"], 0.0, atol=1e-12)


def test_aspect_slope_of_measured_recalled_and_half_measured_shapes():
    true = np.log([0.5, 1.0, 2.0, 3.0])
    assert pairs.aspect_slope(true + 0.1, true) == pytest.approx(1.0)  # measured (a constant bias is no matter)
    assert pairs.aspect_slope(np.full(4, 0.2), true) == pytest.approx(0.0)  # one shape for every target
    assert pairs.aspect_slope(0.5 * true, true) == pytest.approx(0.5)
    assert np.isnan(pairs.aspect_slope(true, np.zeros(4)))  # every target the same shape: no slope


def test_nominal_crop_centres_the_target_at_a_quarter_of_the_crop():
    config = load_config("tiny")
    source = MemorySource.synthetic(2, min_length=20, max_length=20, jpeg_quality=None,
                                    difficulty=Difficulty(max_distractors=0, max_occlusions=0, exit_probability=0))
    settings = pairs.nominal(settings_from_config(config, 1))
    assert settings.search.center_jitter == settings.search.scale_jitter == 0.0
    for index in range(4):
        x, y, w, h = make_example([source], settings, seed=0, index=index)["search_anno"]
        # the crop's side is 4·sqrt(w·h) of the image box, so the box fills sqrt(w/h)/4 × sqrt(h/w)/4 of it:
        # its area is 1/16 of the crop's, its centre the crop's (within a pixel's rounding; flips keep both)
        assert abs(w * h - 1 / 16) < 2e-2 / 16
        np.testing.assert_allclose([x + w / 2, y + h / 2], [0.5, 0.5], atol=1.5 / settings.search.size)


def test_rows_cover_both_splits_and_crops(tiny_model_and_variables):
    model, variables = tiny_model_and_variables
    config = load_config("tiny")
    source = MemorySource.synthetic(2, min_length=20, max_length=20)
    rows = pairs.pair_rows(config, model, variables, {"train": [source], "val": [source]}, num_pairs=4)
    assert [r["pairs"] for r in rows] == ["train, training jitter", "train, nominal crop", "val, training jitter",
                                          "val, nominal crop"]
    for row in rows:
        assert 0.0 <= row["iou"] <= 1.0 and row["centre_px"] >= 0 and row["size"] >= abs(row["size_signed"]) - 1e-12
        assert np.isfinite(row["aspect_slope"])
    # the nominal crop changes what the model sees
    assert rows[0]["centre_px"] != rows[1]["centre_px"]
    assert "| val, nominal crop |" in pairs.format_pair_rows(rows)
