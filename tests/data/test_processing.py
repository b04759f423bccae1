"""The official crop, normalisation and crop-frame GT (docs/tracking.md#crop, docs/tracking.md#pre-processing,
docs/training.md#ground-truth-in-the-crop).

References: ``tests/fixtures/official/processing_refs.npz`` (``crop_*``, the official ``sample_target``) and
``grm_tiny/outputs.npz`` (the official pre-processing of the tiny model's inputs).
"""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.data.processing import (
    crop_paddings,
    crop_window,
    normalize_image,
    sample_target,
    transform_box_to_crop,
)
from helpers import OFFICIAL

with np.load(OFFICIAL / "processing_refs.npz") as _refs:
    # The recorded official crops: every case the fixture holds (crop_<case>_image, _box, _factor, ...).
    CROP_CASES = sorted({key.split("_")[1] for key in _refs.files if key.startswith("crop_")})


@pytest.fixture(scope="module")
def refs():
    with np.load(OFFICIAL / "processing_refs.npz") as data:
        return dict(data)


@pytest.mark.parametrize("case", CROP_CASES)
def test_sample_target_matches_official(refs, case):
    p = f"crop_{case}_"
    crop, rf, mask = sample_target(refs[p + "image"], refs[p + "box"], float(refs[p + "factor"]),
                                   int(refs[p + "output_size"]))
    # Same window, same OpenCV padding and INTER_LINEAR kernel: the uint8 crop must be identical (tolerance 0).
    assert crop.dtype == np.uint8 and crop.shape == refs[p + "crop"].shape
    assert np.array_equal(crop, refs[p + "crop"])
    # resize_factor is one float64 division output/crop_sz in both: ≤ 1e-12 (in fact bit-equal).
    assert abs(rf - float(refs[p + "resize_factor"])) <= 1e-12
    # The mask is a bool of the same resized float mask: identical (tolerance 0).
    assert mask.dtype == bool and np.array_equal(mask, refs[p + "mask"])


@pytest.mark.parametrize("box,factor,window,pads", [
    # Worked examples on a 640×480 image (docs/tracking.md#worked-examples); pads are (left, right, top, bottom).
    ((100.3, 50.7, 40.2, 30.1), 4.0, (50, -4, 140), (0, 0, 4, 0)),
    ((600, 440, 30, 30), 4.0, (555, 395, 120), (0, 36, 0, 36)),  # +1 quirk: 35 overhang + 1
    ((10, 10, 100, 80), 2.0, (-30, -40, 179), (30, 0, 40, 0)),  # round(−29.5) = −30, round(−39.5) = −40
])
def test_crop_window_and_paddings_worked_examples(box, factor, window, pads):
    assert crop_window(box, factor) == window  # integers: exact
    assert crop_paddings(*window, 480, 640) == pads  # integers: exact


@pytest.mark.parametrize("box,factor,out,rf", [
    ((100.3, 50.7, 40.2, 30.1), 4.0, 256, 256 / 140),
    ((10, 10, 100, 80), 2.0, 128, 128 / 179),
])
def test_resize_factor_worked_examples(box, factor, out, rf):
    crop, resize_factor, mask = sample_target(np.zeros((480, 640, 3), np.uint8), box, factor, out)
    assert crop.shape == (out, out, 3) and mask.shape == (out, out)
    assert resize_factor == rf  # the same float64 division: exact


def test_border_quirk_excludes_last_column():
    """Box (600,440,30,30) on 640×480: columns 555..638 are copied, 639 is padding
    (docs/tracking.md#worked-examples)."""
    image = np.full((480, 640, 3), 200, np.uint8)
    crop, rf, mask = sample_target(image, (600, 440, 30, 30), 4.0, None)
    assert crop.shape == (120, 120, 3) and rf == 1.0
    assert not mask[0, 83] and mask[0, 84]  # x = 555 + 84 = 639 is padding
    assert crop[0, 84, 0] == 0 and crop[0, 83, 0] == 200  # black padding, image copied
    assert not mask[83, 0] and mask[84, 0]  # same for the bottom row y = 395 + 84 = 479


def test_window_left_of_the_image_keeps_the_official_slicing():
    """Box (−60,10,20,20), factor 2 on 120×100: crop_sz 40, x1 = −70, x2 = −30, left = 70. The official slice
    image[:, 0:−30] copies 90 columns, so the padded crop is 160 wide and its mask (ones of the padded shape)
    has 90 copied columns; resized to 32, output column 0 samples x = 2 (padding), column 31 x = 157 (copied)."""
    image = np.full((100, 120, 3), 90, np.uint8)
    crop, rf, mask = sample_target(image, (-60, 10, 20, 20), 2.0, 32)
    assert rf == 32 / 40
    assert mask[:, 0].all() and not mask[:, 31].any()
    assert (crop[:, 0] == 0).all() and (crop[:, 31] == 90).all()


def test_empty_crop_is_an_error_naming_the_box():
    with pytest.raises(ValueError, match=r"box \(1, 1, 0, 5\).*crop_sz 0 < 1"):
        sample_target(np.zeros((10, 10, 3), np.uint8), (1, 1, 0, 5), 2.0, 16)
    with pytest.raises(ValueError, match=r"box \(1, 1, -2, 5\)"):  # negative area: math.sqrt fails officially
        crop_window((1, 1, -2, 5), 2.0)
    with pytest.raises(ValueError, match="not finite"):
        sample_target(np.zeros((10, 10, 3), np.uint8), (1, 1, np.nan, 5), 2.0, 16)


def test_tiny_box_still_gives_a_one_pixel_crop():
    """ceil of a positive number is ≥ 1: sqrt(0.01)·2 = 0.2 → crop_sz 1 (no error)."""
    assert crop_window((5.0, 5.0, 0.1, 0.1), 2.0)[2] == 1


def test_normalize_matches_official_preprocessing():
    with np.load(OFFICIAL / "grm_tiny" / "outputs.npz") as data:
        for key in ("template", "search"):
            ours = np.stack([normalize_image(im) for im in data[f"{key}_u8"]])
            assert ours.dtype == np.float32
            # Same float32 operations in the same order (/255, −mean, /std): bit-identical (tolerance 0).
            assert np.array_equal(ours, data[key].transpose(0, 2, 3, 1))


def test_normalize_formula():
    image = np.array([[[255, 0, 128]]], np.uint8)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(normalize_image(image)[0, 0], expected, rtol=1e-6)  # float32 vs float64 formula


def test_transform_box_to_crop_worked_example():
    """docs/tracking.md#worked-examples: box (10,10,100,80), factor 2, out 128 → crop_sz 179 →
    (0.2168, 0.2726, 0.5587, 0.4469)."""
    box = (10, 10, 100, 80)
    np.testing.assert_allclose(transform_box_to_crop(box, box, 128 / 179, 128), [0.2168, 0.2726, 0.5587, 0.4469],
                               rtol=0, atol=1e-4)  # the measured values are quoted with 4 decimals


def test_transform_box_to_crop_uses_out_minus_one_half():
    """A GT equal to the crop's source box is centred at (out − 1)/2, not out/2 (QUIRK,
    docs/training.md#ground-truth-in-the-crop); a GT moved by d px moves by d·rf/out."""
    src = (50.0, 40.0, 20.0, 10.0)
    box = transform_box_to_crop(src, src, 2.0, 64)
    centre = box[:2] + 0.5 * box[2:]
    np.testing.assert_allclose(centre, [31.5 / 64, 31.5 / 64], rtol=0, atol=1e-12)  # float64 rounding only
    moved = transform_box_to_crop((53.0, 40.0, 20.0, 10.0), src, 2.0, 64)
    np.testing.assert_allclose(moved - box, [6.0 / 64, 0, 0, 0], rtol=0, atol=1e-12)  # float64 rounding only
