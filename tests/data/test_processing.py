"""The official crop, normalisation and GT mapping (spec §5.1, §5.2, §4.5 step 5)."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.data.processing import crop_window, normalize_image, sample_target, transform_box_to_crop


@pytest.mark.parametrize("case", range(16))
def test_sample_target_matches_official(processing_refs, case):
    p = f"crop_{case:02d}_"
    crop, rf, mask = sample_target(processing_refs[p + "image"], processing_refs[p + "box"],
                                   float(processing_refs[p + "factor"]), int(processing_refs[p + "output_size"]))
    np.testing.assert_array_equal(crop, processing_refs[p + "crop"])  # same OpenCV kernel: identical uint8
    assert abs(rf - float(processing_refs[p + "resize_factor"])) <= 1e-12  # one float64 division
    np.testing.assert_array_equal(mask, processing_refs[p + "mask"])


@pytest.mark.parametrize("box,factor,expected", [
    ((100.3, 50.7, 40.2, 30.1), 4.0, (50, -4, 140)),
    ((600, 440, 30, 30), 4.0, (555, 395, 120)),
    ((10, 10, 100, 80), 2.0, (-30, -40, 179)),  # round(−29.5) = −30, round(−39.5) = −40: half to even
])
def test_crop_window_worked_examples(box, factor, expected):
    assert crop_window(box, factor) == expected


def test_border_quirk_excludes_last_column():
    """Box (600,440,30,30) on 640×480: columns 555..638 are copied, 639 is padding (spec §5.1 example)."""
    image = np.full((480, 640, 3), 200, np.uint8)
    crop, rf, mask = sample_target(image, (600, 440, 30, 30), 4.0, None)
    assert crop.shape == (120, 120, 3) and rf == 1.0
    assert mask[0, 83] == 0 and mask[0, 84] == 1  # x = 555 + 84 = 639 is padding
    assert crop[0, 84, 0] == 0 and crop[0, 83, 0] == 200


def test_empty_crop_is_an_error():
    with pytest.raises(ValueError, match="empty crop"):
        sample_target(np.zeros((10, 10, 3), np.uint8), (1, 1, 0, 5), 2.0, 16)
    with pytest.raises(ValueError, match="not finite"):
        sample_target(np.zeros((10, 10, 3), np.uint8), (1, 1, np.nan, 5), 2.0, 16)


def test_normalize_matches_fixture(tiny_outputs):
    ours = normalize_image(tiny_outputs["template_u8"][0])
    np.testing.assert_allclose(ours, tiny_outputs["template"][0].transpose(1, 2, 0), atol=1e-6)  # float32


def test_transform_box_to_crop_worked_example():
    """Spec §5.1: box (10,10,100,80), factor 2, out 128 → crop_sz 179 → (0.2168, 0.2726, 0.5587, 0.4469)."""
    box = (10, 10, 100, 80)
    _, rf, _ = sample_target(np.zeros((480, 640, 3), np.uint8), box, 2.0, 128)
    np.testing.assert_allclose(transform_box_to_crop(box, box, rf, 128), [0.2168, 0.2726, 0.5587, 0.4469],
                               atol=1e-4)  # the spec prints 4 decimals
