"""Tests of grm_jax/data/transforms.py: each step of the official processing
(docs/training.md#processing-and-augmentation)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.data import transforms as tf
from grm_jax.data.processing import normalize_image, sample_target, transform_box_to_crop
from grm_jax.models.relation import template_box_mask as template_box_mask_jnp

TEMPLATE = tf.CropSettings(2.0, 32)
SEARCH = tf.CropSettings(4.0, 64, 3.0, 0.25)
PLAIN = tf.AugmentOptions(grayscale_prob=0.0, joint_flip_prob=0.0, brightness_jitter=0.0, crop_flip_prob=0.0)


def gradient_image(h=120, w=160) -> np.ndarray:
    """Red rises left → right, green top → bottom: a flip of any crop is visible in its red channel."""
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.linspace(20, 235, w).astype(np.uint8)[None, :]
    image[..., 1] = np.linspace(30, 220, h).astype(np.uint8)[:, None]
    image[..., 2] = 90
    return image


def red_rises(normalised: np.ndarray) -> bool:
    """True when the crop's red channel increases left → right (not flipped relative to the source)."""
    red = normalised[..., 0]
    return bool(red[:, -4:].mean() > red[:, :4].mean())


# --- step 1 -------------------------------------------------------------------------------------------------------


def test_flip_image_box_rule():
    image = gradient_image(10, 20)
    flipped, box = tf.flip_image_box(image, np.array([3.0, 2.0, 5.0, 4.0]))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(box, [(20 - 1) - (3 + 5), 2, 5, 4])  # x ← (W − 1) − (x + w)


def test_joint_transform_uses_one_roll_for_both_frames():
    a, b = gradient_image(), gradient_image(100, 140)
    both = tf.AugmentOptions(grayscale_prob=1.0, joint_flip_prob=1.0)
    images, boxes = tf.joint_transform(np.random.default_rng(0), [a, b], [[1, 2, 3, 4], [5, 6, 7, 8]], both)
    for image, source, box, old in zip(images, (a, b), boxes, ([1, 2, 3, 4], [5, 6, 7, 8])):
        assert np.all(image[..., 0] == image[..., 1]) and np.all(image[..., 1] == image[..., 2])  # grey
        np.testing.assert_array_equal(image[..., 0], tf.to_grayscale(source)[:, ::-1, 0])
        assert box[0] == (source.shape[1] - 1) - (old[0] + old[2])
    none = tf.AugmentOptions(grayscale_prob=0.0, joint_flip_prob=0.0)
    images, boxes = tf.joint_transform(np.random.default_rng(0), [a, b], [[1, 2, 3, 4], [5, 6, 7, 8]], none)
    np.testing.assert_array_equal(images[0], a)
    np.testing.assert_array_equal(boxes[1], [5, 6, 7, 8])


def test_joint_flip_rate_and_sharing():
    """p = 0.5: about half the rolls flip (binomial σ ≈ 0.022 for 500 rolls; ±0.1 is over 4σ), always both."""
    image = gradient_image(8, 12)
    flips = []
    for seed in range(500):
        images, _ = tf.joint_transform(np.random.default_rng(seed), [image, image], [[0, 0, 1, 1]] * 2,
                                       tf.AugmentOptions(grayscale_prob=0.0))
        f0, f1 = not np.array_equal(images[0], image), not np.array_equal(images[1], image)
        assert f0 == f1
        flips.append(f0)
    assert abs(np.mean(flips) - 0.5) < 0.1


def draws_beyond_official(image, options) -> bool:
    """True when ``joint_transform`` with ``options`` draws more random numbers than the official two rolls (grey,
    flip): the generator's next draw then differs from one that made only those two."""
    rng, official = np.random.default_rng(3), np.random.default_rng(3)
    tf.joint_transform(rng, [image], [[1, 2, 3, 4]], options)
    official.random(), official.random()
    return rng.random() != official.random()


def test_channel_shuffle_permutes_both_frames_alike_and_off_draws_nothing():
    a, b = gradient_image(), gradient_image(100, 140)
    shuffle = dataclasses.replace(PLAIN, channel_shuffle_prob=1.0)
    seen = set()
    for seed in range(20):
        (ia, ib), _ = tf.joint_transform(np.random.default_rng(seed), [a, b], [[1, 2, 3, 4]] * 2, shuffle)
        # the permutation that maps a's channel means onto ia's, the same for b
        perm = tuple(int(np.argmin([abs(ia[..., c].mean() - a[..., k].mean()) for k in range(3)])) for c in range(3))
        np.testing.assert_array_equal(ia, a[..., list(perm)])
        np.testing.assert_array_equal(ib, b[..., list(perm)])
        seen.add(perm)
    assert len(seen) > 2  # more than the identity and one other order in 20 rolls
    # Off (the official setting) draws nothing more than the official two rolls (grey, flip): the stream after the
    # joint transform is the official one; on, it draws more.
    for prob, draws_more in ((0.0, False), (1.0, True)):
        assert draws_beyond_official(a, dataclasses.replace(PLAIN, channel_shuffle_prob=prob)) == draws_more


def test_colour_affine_formula():
    image = np.array([[[0, 100, 255], [10, 20, 30]]], np.uint8)
    out = tf.colour_affine(image, np.array([1.5, 0.5, 1.0]), np.array([10.0, -20.0, 0.4]))
    expected = np.clip(np.round(image * np.array([1.5, 0.5, 1.0]) + np.array([10.0, -20.0, 0.4])), 0, 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_colour_jitter_maps_both_frames_alike_and_off_draws_nothing():
    a = gradient_image()
    jitter = dataclasses.replace(PLAIN, colour_jitter=0.5)
    changed = 0
    for seed in range(10):
        (ia, ib), _ = tf.joint_transform(np.random.default_rng(seed), [a, a.copy()], [[1, 2, 3, 4]] * 2, jitter)
        np.testing.assert_array_equal(ia, ib)  # one draw for the pair
        changed += not np.array_equal(ia, a)
    assert changed == 10
    for strength, draws_more in ((0.0, False), (0.5, True)):
        assert draws_beyond_official(a, dataclasses.replace(PLAIN, colour_jitter=strength)) == draws_more


def test_random_rotation_is_a_rotation_and_covers_the_group():
    rotations = [tf.random_rotation(np.random.default_rng(seed)) for seed in range(200)]
    for r in rotations:
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
    # Haar measure on SO(3): E[R] = 0 and E[trace R] = 0 (the trace is 1 + 2 cos θ); 200 draws: |mean| ~ 0.07
    assert np.abs(np.mean(rotations, axis=0)).max() < 0.25
    assert abs(np.mean([np.trace(r) for r in rotations])) < 0.25


def test_rotate_colours_formula_keeps_distances_inside_the_cube():
    rng = np.random.default_rng(1)
    rotation = tf.random_rotation(rng)
    image = rng.integers(90, 167, size=(6, 7, 3)).astype(np.uint8)  # within 64 of the centre: nothing clips
    out = tf.rotate_colours(image, rotation)
    exact = (image.astype(np.float64) - 128) @ rotation.T + 128
    np.testing.assert_allclose(out, np.round(exact), atol=1.0)  # OpenCV rounds in single precision
    a, b = image.reshape(-1, 3).astype(np.float64), out.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(b[1:] - b[0], axis=1), np.linalg.norm(a[1:] - a[0], axis=1), atol=2.0)
    saturated = tf.rotate_colours(np.array([[[255, 255, 255]]], np.uint8), rotation)  # corners may leave the cube
    assert saturated.dtype == np.uint8


def test_colour_rotation_maps_both_frames_alike_and_off_draws_nothing():
    a = gradient_image()
    on = dataclasses.replace(PLAIN, colour_rotation_prob=1.0)
    changed = 0
    for seed in range(10):
        (ia, ib), (ba, _) = tf.joint_transform(np.random.default_rng(seed), [a, a.copy()], [[1, 2, 3, 4]] * 2, on)
        np.testing.assert_array_equal(ia, ib)  # one rotation for the pair
        np.testing.assert_array_equal(ba, [1, 2, 3, 4])  # pixels move in colour only
        changed += not np.array_equal(ia, a)
    assert changed == 10
    for prob, draws_more in ((0.0, False), (1.0, True)):
        assert draws_beyond_official(a, dataclasses.replace(PLAIN, colour_rotation_prob=prob)) == draws_more


def test_transpose_moves_the_box_with_the_pixels_for_both_frames():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 20:28] = 200  # rows 5..14, columns 20..27: box (20, 5, 8, 10)
    on = dataclasses.replace(PLAIN, transpose_prob=1.0)
    images, boxes = tf.joint_transform(np.random.default_rng(0), [image, image], [[20, 5, 8, 10]] * 2, on)
    for out, box in zip(images, boxes):
        assert out.shape == (60, 40, 3)
        np.testing.assert_array_equal(box, [5, 20, 10, 8])
        x, y, w, h = box.astype(int)
        assert (out[y:y + h, x:x + w] == 200).all() and out.sum() == image.sum()
    assert not draws_beyond_official(image, dataclasses.replace(PLAIN, transpose_prob=0.0))  # off draws nothing


def test_stretch_moves_the_box_with_the_pixels_and_keeps_the_area():
    image = np.zeros((120, 160, 3), np.uint8)
    image[30:70, 40:60] = 255  # box (40, 30, 20, 40)
    for a in (0.3, -0.25):
        out, box = tf.stretch_image_box(image, np.array([40.0, 30, 20, 40]), a)
        sx, sy = out.shape[1] / 160, out.shape[0] / 120
        assert sx == pytest.approx(math.exp(a), abs=1 / 160) and sy == pytest.approx(math.exp(-a), abs=1 / 120)
        np.testing.assert_allclose(box, [40 * sx, 30 * sy, 20 * sx, 40 * sy])
        assert box[2] * box[3] == pytest.approx(800, rel=0.02)  # the area stays (up to the rounded frame size)
        ys, xs = np.nonzero(out[..., 0] > 127)  # the bright block, edges at half height of the bilinear ramp
        np.testing.assert_allclose([xs.min(), xs.max() + 1, ys.min(), ys.max() + 1],
                                   [box[0], box[0] + box[2], box[1], box[1] + box[3]], atol=1.0)


def test_aspect_jitter_stretches_both_frames_alike_and_off_draws_nothing():
    a = gradient_image()
    on = dataclasses.replace(PLAIN, aspect_jitter=0.4)
    shapes = set()
    for seed in range(10):
        (ia, ib), (ba, bb) = tf.joint_transform(np.random.default_rng(seed), [a, a.copy()], [[10, 20, 30, 40]] * 2, on)
        np.testing.assert_array_equal(ia, ib)  # one stretch for the pair
        np.testing.assert_array_equal(ba, bb)
        aspect = math.log((ba[2] / ba[3]) / (30 / 40))
        assert abs(aspect) <= 2 * 0.4 + 0.02  # log aspect changes by 2a, |a| <= s
        shapes.add(ia.shape)
    assert len(shapes) == 10
    for strength, draws_more in ((0.0, False), (0.4, True)):
        assert draws_beyond_official(a, dataclasses.replace(PLAIN, aspect_jitter=strength)) == draws_more


# --- steps 2–3 ----------------------------------------------------------------------------------------------------


def test_jitter_box_formula():
    box = np.array([10.0, 20.0, 30.0, 40.0])
    settings = tf.CropSettings(4.0, 64, center_jitter=3.0, scale_jitter=0.25)
    out = tf.jitter_box(np.random.default_rng(3), box, settings)
    rng = np.random.default_rng(3)
    n, u = rng.standard_normal(2), rng.random(2)
    wh = box[2:] * np.exp(n * 0.25)
    centre = box[:2] + box[2:] / 2 + math.sqrt(wh[0] * wh[1]) * 3.0 * (u - 0.5)
    np.testing.assert_allclose(out, np.concatenate([centre - wh / 2, wh]), rtol=0, atol=1e-12)  # same float64 ops


def test_template_jitter_is_identity():
    box = np.array([10.5, 20.25, 30.0, 40.0])
    np.testing.assert_array_equal(tf.jitter_box(np.random.default_rng(0), box, TEMPLATE), box)


def test_crop_validity():
    assert tf.crop_is_valid(np.array([0, 0, 1e-6, 1e-6]), 2.0)  # ceil of a positive number is ≥ 1
    assert not tf.crop_is_valid(np.array([0, 0, 0.0, 5.0]), 2.0)  # ceil(0) = 0 < 1
    assert not tf.crop_is_valid(np.array([0, 0, np.nan, 5.0]), 2.0)


# --- steps 4–6 ----------------------------------------------------------------------------------------------------


def test_brightness_and_normalisation():
    crop = np.array([[[0, 100, 250]]], np.uint8)
    np.testing.assert_array_equal(tf.brightness(crop, 1.2), np.float32([[[0.0, 100 * np.float32(1.2 / 255), 1.0]]]))
    u8 = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    ours = tf.normalize(tf.brightness(u8, 1.0), tf.IMAGENET_MEAN, tf.IMAGENET_STD)
    # u8·float32(1/255) vs u8/255 differ by at most 1 ulp of [0, 1] before the division by std ≥ 0.224.
    np.testing.assert_allclose(ours, normalize_image(u8), rtol=0, atol=1e-6)


def test_nearest_downsample_matches_pytorch_rule():
    mask = np.arange(256 * 256).reshape(256, 256)
    np.testing.assert_array_equal(tf.nearest_downsample(mask, 16), mask[::16, ::16])  # integer ratio
    small = np.arange(10 * 10).reshape(10, 10)
    np.testing.assert_array_equal(tf.nearest_downsample(small, 4), small[np.ix_([0, 2, 5, 7], [0, 2, 5, 7])])


def test_mask_rejects():
    mask = np.ones((64, 64), bool)
    assert tf.mask_rejects(mask, 64, 16)
    mask[3, 5] = False  # one real pixel, not on the 16-px sampling grid
    assert tf.mask_rejects(mask, 64, 16)
    mask[16, 0] = False  # now the down-sample sees it
    assert not tf.mask_rejects(mask, 64, 16)


@pytest.mark.parametrize("grid", [2, 4, 8])
def test_template_box_mask_matches_the_model(grid):
    boxes = np.random.default_rng(grid).uniform(-0.3, 1.1, (64, 4)).astype(np.float32)
    boxes[:, 2:] = np.abs(boxes[:, 2:])
    expected = np.asarray(template_box_mask_jnp(jnp.asarray(boxes), grid))
    ours = np.stack([tf.template_box_mask(b, grid) for b in boxes])
    np.testing.assert_array_equal(ours, expected)


def test_plain_pair_is_crop_and_gt_mapping():
    """No randomness enabled: the sample is sample_target + normalize_image + transform_box_to_crop."""
    image = gradient_image()
    box = np.array([60.0, 40.0, 30.0, 24.0])
    plain_search = tf.CropSettings(4.0, 64)
    sample = tf.process_pair(np.random.default_rng(0), image, box, image, box, TEMPLATE, plain_search, PLAIN)
    for key, settings in (("template", TEMPLATE), ("search", plain_search)):
        crop, rf, _ = sample_target(image, box, settings.factor, settings.size)
        np.testing.assert_allclose(sample[key], normalize_image(crop), rtol=0, atol=1e-6)  # see brightness test
        np.testing.assert_allclose(sample[f"{key}_anno"], transform_box_to_crop(box, box, rf, settings.size),
                                   rtol=0, atol=1e-7)  # float32 output of a float64 computation
    assert sample["template"].dtype == np.float32 and sample["template"].shape == (32, 32, 3)
    assert sample["search"].shape == (64, 64, 3) and sample["template_mask"].shape == (4,)
    np.testing.assert_array_equal(sample["template_mask"], tf.template_box_mask(sample["template_anno"], 2))


def test_gt_centre_switch_moves_half_a_pixel():
    image = gradient_image()
    box = np.array([60.0, 40.0, 30.0, 24.0])
    official = tf.process_pair(np.random.default_rng(0), image, box, image, box, TEMPLATE, TEMPLATE, PLAIN)
    tracker = tf.process_pair(np.random.default_rng(0), image, box, image, box, TEMPLATE, TEMPLATE,
                              dataclasses.replace(PLAIN, gt_center_minus_half=False))
    np.testing.assert_allclose(tracker["template_anno"] - official["template_anno"], [0.5 / 32, 0.5 / 32, 0, 0],
                               atol=1e-7)  # float32 rounding of values ≤ 1


def test_crop_flip_quirk_independent_by_default():
    """Per-crop flips: all four (template, search) combinations occur by default; with the switch off the two
    crops always flip together. The joint flip is disabled so the gradient's direction shows the crop flip."""
    image = gradient_image()
    box = np.array([60.0, 40.0, 30.0, 24.0])
    options = dataclasses.replace(PLAIN, crop_flip_prob=0.5)
    base = tf.process_pair(np.random.default_rng(0), image, box, image, box, TEMPLATE, TEMPLATE, PLAIN)
    mirrored = tf.flip_normalised_box(base["template_anno"].astype(np.float64))
    seen = set()
    for seed in range(40):
        s = tf.process_pair(np.random.default_rng(seed), image, box, image, box, TEMPLATE, TEMPLATE, options)
        t_flip, s_flip = not red_rises(s["template"]), not red_rises(s["search"])
        # The box follows the image: a flipped crop's GT is mirrored (x ← 1 − (x + w)); float32 outputs.
        np.testing.assert_allclose(s["template_anno"], mirrored if t_flip else base["template_anno"], atol=1e-6)
        seen.add((t_flip, s_flip))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    joint = dataclasses.replace(options, independent_crop_flip=False)
    for seed in range(40):
        s = tf.process_pair(np.random.default_rng(seed), image, box, image, box, TEMPLATE, TEMPLATE, joint)
        assert red_rises(s["template"]) == red_rises(s["search"])


def test_crop_flip_moves_box_and_mask():
    crop = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[:, :2] = True
    image, anno, out_mask = tf.crop_transform(crop, np.array([0.1, 0.2, 0.3, 0.4]), mask, 1.0, True, PLAIN)
    np.testing.assert_allclose(anno, [1 - (0.1 + 0.3), 0.2, 0.3, 0.4], atol=1e-15)
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_all_padding_crop_is_rejected():
    image = gradient_image()
    far = np.array([-500.0, 40.0, 30.0, 24.0])  # the template crop lies entirely left of the image
    good = np.array([60.0, 40.0, 30.0, 24.0])
    assert tf.process_pair(np.random.default_rng(0), image, far, image, good, TEMPLATE, TEMPLATE, PLAIN) is None


def test_zero_size_box_is_invalid():
    image = gradient_image()
    good = np.array([60.0, 40.0, 30.0, 24.0])
    flat = np.array([60.0, 40.0, 0.0, 24.0])
    assert tf.process_pair(np.random.default_rng(0), image, good, image, flat, TEMPLATE, SEARCH, PLAIN) is None


def test_search_gt_stays_near_the_centre_under_jitter():
    """Search jitter (centre ±1.5·sqrt(w'h'), crop 4·sqrt(w'h')): the GT centre is at most 3/8 of the crop from
    its centre, plus 1/64: half a pixel for the (out − 1)/2 convention and up to half a pixel (rf < 1 here) for
    the rounding of the crop origin."""
    image = gradient_image()
    box = np.array([60.0, 40.0, 30.0, 24.0])
    options = tf.AugmentOptions(grayscale_prob=0.0, joint_flip_prob=0.0, crop_flip_prob=0.0)
    for seed in range(50):
        s = tf.process_pair(np.random.default_rng(seed), image, box, image, box, TEMPLATE, SEARCH, options)
        if s is None:
            continue
        centre = s["search_anno"][:2] + s["search_anno"][2:] / 2
        assert np.all(np.abs(centre - 0.5) <= 3 / 8 + 1 / 64 + 1e-6)
