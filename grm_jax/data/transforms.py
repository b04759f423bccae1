"""Processing and augmentation of one template/search pair, the official ``GRMProcessing``
(docs/training.md#processing-and-augmentation).

``process_pair`` runs, with every random choice from the ``np.random.Generator`` it is given:

1. joint transform of the two full frames, one roll for both: grayscale (p 0.05; OpenCV RGB→GRAY replicated to three
   channels), then horizontal flip (p 0.5; box x ← (W − 1) − (x + w));
2. box jitter per frame: wh' = wh·exp(N(0,1)₂·scale_jitter), c' = c + sqrt(w'h')·center_jitter·(U(0,1)₂ − 0.5);
3. invalid when ceil(sqrt(w'h')·factor) < 1 for either frame;
4. ``sample_target`` crop around the jittered box; 5. ground truth in the crop with ``transform_box_to_crop``
   ((out − 1)/2 centre — an official quirk, docs/training.md#ground-truth-in-the-crop);
6. per crop, rolled separately for template and search: brightness f ~ U(0.8, 1.2), image = clamp(u8·f/255, 0, 1);
   horizontal flip p 0.5 of image, padding mask and normalised box (x ← 1 − (x + w)) — independent for template and
   search (an official quirk, docs/training.md#per-crop-flip); ImageNet normalisation;
7. rejected when a padding mask is all True, or its nearest down-sample to (out/16)² is all True.

Each official quirk that is not part of the shared crop is a named switch of :class:`AugmentOptions`, reproducing
the official behaviour by default. Not reproduced: brightness factors that may repeat across DataLoader workers
(docs/training.md#brightness-random-numbers) — here every sample has its own generator, by design.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from grm_jax.data.processing import sample_target, transform_box_to_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class CropSettings:
    """``DATA.TEMPLATE`` / ``DATA.SEARCH``: crop factor, output size (px), centre and scale jitter."""

    factor: float
    size: int
    center_jitter: float = 0.0
    scale_jitter: float = 0.0


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """Augmentation probabilities and the official quirks (defaults = official behaviour)."""

    grayscale_prob: float = 0.05  # joint transform
    joint_flip_prob: float = 0.5  # joint transform, full frames
    # Not in the official code: a random permutation of the colour channels, the same for both frames (joint
    # transform), with this probability. 0 draws nothing, so the official sample stream is unchanged.
    channel_shuffle_prob: float = 0.0
    # Not in the official code either: with s > 0, one random affine map of each colour channel per pair, the same
    # for both frames (joint transform, after the channel order): c' = clip(round(g_c·c + o_c), 0, 255) with
    # g_c ~ U(1 − s, 1 + s), o_c ~ U(−128·s, 128·s). 0 draws nothing.
    colour_jitter: float = 0.0
    # Not official: with this probability, both full frames of a pair transposed (rows ↔ columns; with the flips, four
    # orientations of every target instead of two). 0 draws nothing.
    transpose_prob: float = 0.0
    # Not official: with s > 0, both full frames of a pair stretched by (e^a, e^−a), a ~ U(−s, s) (joint transform,
    # before the transposition): the target's aspect ratio changes by e^2a while its area stays, so that a model
    # trained on few targets has to measure their shape rather than recall it. 0 draws nothing.
    aspect_jitter: float = 0.0
    # Not official: with this probability, one rotation R of the colour cube about its centre per pair, uniform over
    # SO(3), the same for both frames (joint transform, after the channel order): c' = clip(R·(c − 128) + 128), rounded.
    # It keeps every distance between colours (so a target's contrast with its background), and draws new colour
    # schemes where the channel order gives six. 0 draws nothing.
    colour_rotation_prob: float = 0.0
    brightness_jitter: float = 0.2  # factor ~ U(1 − b, 1 + b) (lower end clamped at 0)
    crop_flip_prob: float = 0.5  # per-crop flip
    # Quirk (docs/training.md#per-crop-flip): the per-crop flip is rolled separately for template and search.
    # False: one roll for both crops.
    independent_crop_flip: bool = True
    # Quirk (docs/training.md#ground-truth-in-the-crop): training GT uses (out − 1)/2 as the crop centre.
    # False: out/2, the tracker's convention.
    gt_center_minus_half: bool = True
    # Rejection rule (step 7): the official code down-samples masks by a hard-coded 16 (the backbone stride).
    mask_stride: int = 16
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


# ---------------------------------------------------------------------------------------------------------------
# Step 1: joint transform.


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """OpenCV RGB→GRAY, replicated to three channels (uint8)."""
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[..., None], 3, axis=2)


def flip_image_box(image: np.ndarray, box: np.ndarray):
    """Horizontal flip of a full frame and its pixel box: x ← (W − 1) − (x + w)."""
    w_img = image.shape[1]
    x, y, w, h = box
    return image[:, ::-1], np.array([(w_img - 1) - (x + w), y, w, h], np.float64)


def colour_affine(image: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 image with channel c mapped to clip(round(gain[c]·c + offset[c]), 0, 255), by a lookup table per
    channel."""
    levels = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(np.round(levels * np.asarray(gain)[None] + np.asarray(offset)[None]), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.stack([lut[image[..., c], c] for c in range(3)], axis=-1))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A 3×3 rotation uniform over SO(3): Q of the QR decomposition of a standard normal matrix, its columns'
    signs fixed by R's diagonal (Haar measure over O(3)), one column negated where det(Q) = −1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotate_colours(image: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """uint8 image with every pixel c mapped to clip(R·(c − 128) + 128, 0, 255) (``rotation`` = R), rounded by
    OpenCV's ``transform`` (single precision: within one grey level of the exact rounding)."""
    affine = np.concatenate([rotation, (128.0 - rotation @ np.full(3, 128.0))[:, None]], axis=1)
    return cv2.transform(np.ascontiguousarray(image), affine)


def transpose_image_box(image: np.ndarray, box: np.ndarray):
    """A full frame with rows and columns exchanged and its pixel box: (x, y, w, h) ← (y, x, h, w)."""
    x, y, w, h = box
    return image.transpose(1, 0, 2), np.array([y, x, h, w], np.float64)


def stretch_image_box(image: np.ndarray, box: np.ndarray, log_stretch: float):
    """A full frame resized by (e^a, e^−a) (a = ``log_stretch``; bilinear, sizes rounded) and its pixel box:
    x ← x·W'/W, w ← w·W'/W, y ← y·H'/H, h ← h·H'/H (pixel corners map exactly under OpenCV's centre convention)."""
    h_img, w_img = image.shape[:2]
    new_w, new_h = max(int(round(w_img * np.exp(log_stretch))), 1), max(int(round(h_img * np.exp(-log_stretch))), 1)
    sx, sy = new_w / w_img, new_h / h_img
    x, y, w, h = box
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, np.array([x * sx, y * sy, w * sx, h * sy], np.float64)


def joint_transform(rng: np.random.Generator, images, boxes, options: AugmentOptions):
    """One grayscale roll and one flip roll, applied to every frame (template first, search reuses the roll); and,
    when ``options.channel_shuffle_prob`` > 0, one roll and one permutation of the colour channels; when
    ``options.colour_jitter`` s > 0, one gain and offset per channel (:func:`colour_affine`); when
    ``options.colour_rotation_prob`` > 0, one roll and one rotation of the colour cube (:func:`rotate_colours`); when
    ``options.transpose_prob`` > 0, one transposition roll (before the flip); when ``options.aspect_jitter`` s > 0,
    one stretch a ~ U(−s, s) (:func:`stretch_image_box`, before the transposition)."""
    gray = rng.random() < options.grayscale_prob
    flip = rng.random() < options.joint_flip_prob
    channels = None
    if options.channel_shuffle_prob > 0 and rng.random() < options.channel_shuffle_prob:
        channels = rng.permutation(3)
    affine = None
    if options.colour_jitter > 0:
        s = options.colour_jitter
        affine = rng.uniform(1 - s, 1 + s, size=3), rng.uniform(-128 * s, 128 * s, size=3)
    transpose = options.transpose_prob > 0 and rng.random() < options.transpose_prob
    rotation = None
    if options.colour_rotation_prob > 0 and rng.random() < options.colour_rotation_prob:
        rotation = random_rotation(rng)
    stretch = rng.uniform(-options.aspect_jitter, options.aspect_jitter) if options.aspect_jitter > 0 else None
    out_images, out_boxes = [], []
    for image, box in zip(images, boxes):
        box = np.asarray(box, np.float64)
        if gray:
            image = to_grayscale(image)
        if channels is not None:
            image = image[..., channels]
        if affine is not None:
            image = colour_affine(image, *affine)
        if rotation is not None:
            image = rotate_colours(image, rotation)
        if stretch is not None:
            image, box = stretch_image_box(image, box, stretch)
        if transpose:
            image, box = transpose_image_box(image, box)
        if flip:
            image, box = flip_image_box(image, box)
        out_images.append(np.ascontiguousarray(image))
        out_boxes.append(box)
    return out_images, out_boxes


# ---------------------------------------------------------------------------------------------------------------
# Steps 2–3: jitter and crop validity.


def jitter_box(rng: np.random.Generator, box: np.ndarray, settings: CropSettings) -> np.ndarray:
    """wh' = wh·exp(N(0,1)₂·scale_jitter); c' = c + sqrt(w'·h')·center_jitter·(U(0,1)₂ − 0.5); → (c' − wh'/2, wh').

    Both random pairs are drawn even when the jitters are 0 (template), so the stream does not depend on them.
    """
    box = np.asarray(box, np.float64)
    size = box[2:4] * np.exp(rng.standard_normal(2) * settings.scale_jitter)
    max_offset = math.sqrt(max(size[0] * size[1], 0.0)) * settings.center_jitter
    centre = box[0:2] + 0.5 * box[2:4] + max_offset * (rng.random(2) - 0.5)
    return np.concatenate([centre - 0.5 * size, size])


def crop_is_valid(box: np.ndarray, factor: float) -> bool:
    """The crop of ``box`` exists: ceil(sqrt(w·h)·factor) ≥ 1 (and is a finite number)."""
    area = float(box[2]) * float(box[3])
    if not math.isfinite(area) or area < 0:
        return False
    return math.ceil(math.sqrt(area) * factor) >= 1


# ---------------------------------------------------------------------------------------------------------------
# Steps 4–5: crop and ground truth in the crop.


def crop_and_map(image: np.ndarray, box_gt: np.ndarray, box_jittered: np.ndarray, settings: CropSettings,
                 options: AugmentOptions):
    """``(crop uint8, normalised GT x1,y1,w,h, padding mask)``: ``sample_target`` around the jittered box and
    ``transform_box_to_crop`` of the GT; with ``gt_center_minus_half=False`` the GT is moved by +0.5 px (centre
    out/2 instead of (out − 1)/2)."""
    crop, resize_factor, mask = sample_target(image, box_jittered, settings.factor, settings.size)
    anno = np.asarray(transform_box_to_crop(box_gt, box_jittered, resize_factor, settings.size), np.float64)
    if not options.gt_center_minus_half:
        anno = anno + np.array([0.5, 0.5, 0.0, 0.0]) / settings.size
    return crop, anno, np.asarray(mask, bool)


# ---------------------------------------------------------------------------------------------------------------
# Step 6: per-crop transform.


def brightness(crop: np.ndarray, factor: float) -> np.ndarray:
    """float32 clamp(u8 · factor / 255, 0, 1) (the product in float32, as ``tensor.float().mul(f / 255)``)."""
    return np.clip(crop.astype(np.float32) * np.float32(factor / 255.0), 0.0, 1.0)


def normalize(image01: np.ndarray, mean, std) -> np.ndarray:
    """(x − mean) / std per channel, float32 (torchvision ``Normalize`` on a [0, 1] image)."""
    return (image01 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def flip_normalised_box(box: np.ndarray) -> np.ndarray:
    """x ← 1 − (x + w) for a box normalised by the crop size."""
    x, y, w, h = box
    return np.array([1.0 - (x + w), y, w, h], np.float64)


def crop_transform(crop: np.ndarray, anno: np.ndarray, mask: np.ndarray, brightness_factor: float, flip: bool,
                   options: AugmentOptions):
    """Brightness, optional flip (image, mask, box), normalisation → (float32 HWC, box, mask)."""
    image = brightness(crop, brightness_factor)
    if flip:
        image, mask, anno = image[:, ::-1], mask[:, ::-1], flip_normalised_box(anno)
    return np.ascontiguousarray(normalize(image, options.mean, options.std)), anno, np.ascontiguousarray(mask)


def roll_brightness(rng: np.random.Generator, jitter: float) -> float:
    """U(max(0, 1 − jitter), 1 + jitter)."""
    return float(rng.uniform(max(0.0, 1.0 - jitter), 1.0 + jitter))


# ---------------------------------------------------------------------------------------------------------------
# Step 7: rejection; the model's template box mask.


def nearest_downsample(mask: np.ndarray, size: int) -> np.ndarray:
    """PyTorch ``F.interpolate(mode='nearest')`` to (size, size): source index floor(i · in/size)."""
    rows = np.minimum(np.floor(np.arange(size) * (mask.shape[0] / size)).astype(int), mask.shape[0] - 1)
    cols = np.minimum(np.floor(np.arange(size) * (mask.shape[1] / size)).astype(int), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def mask_rejects(mask: np.ndarray, output_size: int, stride: int) -> bool:
    """True (reject) when the padding mask is all True, or its nearest down-sample to (out/stride)² is."""
    return bool(mask.all() or nearest_downsample(mask, output_size // stride).all())


def template_box_mask(box: np.ndarray, grid: int) -> np.ndarray:
    """NumPy twin of ``models.relation.template_box_mask`` for one box: (grid²,) float32.

    b = box·grid; rows max(int(y1), 0) .. min(int(y1 + h + 1), grid) − 1 and columns likewise are 1 (int truncates
    toward zero); flattened row-major.
    """
    x1, y1, w, h = np.asarray(box, np.float32) * np.float32(grid)
    r0, r1 = max(int(y1), 0), min(int(y1 + h + 1), grid)
    c0, c1 = max(int(x1), 0), min(int(x1 + w + 1), grid)
    mask = np.zeros((grid, grid), np.float32)
    mask[r0:max(r1, r0), c0:max(c1, c0)] = 1.0
    return mask.reshape(-1)


# ---------------------------------------------------------------------------------------------------------------


def process_pair(rng: np.random.Generator, template_image: np.ndarray, template_box, search_image: np.ndarray,
                 search_box, template: CropSettings, search: CropSettings, options: AugmentOptions = AugmentOptions(),
                 patch_size: int = 16):
    """Steps 1–7 for one pair of full RGB frames with pixel boxes → the training sample dict, or None if rejected.

    Sample: ``template`` (Ht, Wt, 3) and ``search`` (Hs, Ws, 3) float32 normalised NHWC, ``template_anno`` and
    ``search_anno`` (4,) float32 normalised x1, y1, w, h, ``template_mask`` (Nz,) float32 (box mask on the
    template's patch grid, Nz = (Ht / patch_size)²).
    """
    (template_image, search_image), (template_box, search_box) = joint_transform(
        rng, [template_image, search_image], [template_box, search_box], options)
    jittered_t = jitter_box(rng, template_box, template)
    jittered_s = jitter_box(rng, search_box, search)
    if not (crop_is_valid(jittered_t, template.factor) and crop_is_valid(jittered_s, search.factor)):
        return None
    crop_t, anno_t, mask_t = crop_and_map(template_image, template_box, jittered_t, template, options)
    crop_s, anno_s, mask_s = crop_and_map(search_image, search_box, jittered_s, search, options)

    bright_t = roll_brightness(rng, options.brightness_jitter)
    flip_t = rng.random() < options.crop_flip_prob
    if options.independent_crop_flip:
        bright_s = roll_brightness(rng, options.brightness_jitter)
        flip_s = rng.random() < options.crop_flip_prob
    else:
        bright_s, flip_s = roll_brightness(rng, options.brightness_jitter), flip_t
    image_t, anno_t, mask_t = crop_transform(crop_t, anno_t, mask_t, bright_t, flip_t, options)
    image_s, anno_s, mask_s = crop_transform(crop_s, anno_s, mask_s, bright_s, flip_s, options)

    if (mask_rejects(mask_t, template.size, options.mask_stride)
            or mask_rejects(mask_s, search.size, options.mask_stride)):
        return None
    return dict(template=image_t, search=image_s,
                template_anno=anno_t.astype(np.float32), search_anno=anno_s.astype(np.float32),
                template_mask=template_box_mask(anno_t, template.size // patch_size))
