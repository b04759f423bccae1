"""Token-division grids (``grm_jax.viz.tokens``) drawn from the tiny fixture model's tracker outputs."""

from __future__ import annotations

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax.data.processing import normalize_image
from grm_jax.models import to_official_layout
from grm_jax.track.tracker import BatchTracker, Tracker, TrackerParams
from grm_jax.viz import tokens
from helpers import OFFICIAL

PATCH = 16  # the tiny model: 128 px search crop, 8 × 8 tokens


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(OFFICIAL / "tracker_refs.npz"))


def _params(refs):
    return TrackerParams(template_factor=2.0, template_size=64, search_factor=4.0, search_size=128,
                         threshold=float(refs["threshold"]))


@pytest.fixture(scope="module")
def frame_one(tiny_model_and_variables, refs):
    """The host-crop tracker's outputs at frame 1 of the reference sequence (each layer has both classes)."""
    model, variables = tiny_model_and_variables
    tracker = Tracker(model, variables, _params(refs))
    tracker.initialize(refs["frames"][0], refs["init_box"])
    tracker.track(refs["frames"][1])
    return tracker.last_outputs


def test_tracker_exposes_crops_and_decisions_per_slot(tiny_model_and_variables, refs):
    """Two slots on different frames: each slot's row holds its own crop and the model's own token choice."""
    model, variables = tiny_model_and_variables
    tracker = BatchTracker(model, variables, _params(refs), batch_size=2)
    tracker.initialize(0, refs["frames"][0], refs["init_box"])
    tracker.initialize(1, refs["frames"][10], refs["gt"][10])
    z, mask = tracker.z.copy(), tracker.template_mask.copy()
    _, out = tracker.track([refs["frames"][1], refs["frames"][11]])
    assert out["decisions"].shape == (2, model.config.depth - 1, 64) and out["decisions"].dtype == np.int8
    assert out["search_crop"].shape == (2, 128, 128, 3) and out["search_crop"].dtype == np.uint8
    np.testing.assert_array_equal(out["search_crop"][0], refs["search_crop"][0])  # the official crop, exact
    x = np.stack([normalize_image(c) for c in out["search_crop"]])
    direct = model.apply(variables, jnp.asarray(z), jnp.asarray(x), jnp.asarray(mask),
                         threshold=jnp.float32(refs["threshold"]))
    expected = np.asarray(to_official_layout(direct)["decisions"]).transpose(1, 0, 2)  # (L−1,B,Ns) → (B,L−1,Ns)
    np.testing.assert_array_equal(out["decisions"], expected)  # token decisions: exact
    # The ratio the model reports is the share of class-1 tokens (k/64 is exact in float32).
    np.testing.assert_array_equal(out["decisions"].mean(-1, dtype=np.float32), out["interaction_ratio"])
    assert out["crop_box"].shape == (2, 4)


def test_grid_layout_and_sizes(frame_one):
    grid = tokens.tracker_token_grid(frame_one, PATCH)
    panels = tokens.token_panels(frame_one["search_crop"], frame_one["decisions"], frame_one["score_map"],
                                 frame_one["crop_box"], PATCH)
    assert len(panels) == 1 + 3 + 2  # crop, three division layers, score map, box
    # A 128 px crop is drawn twice as large: panels of HEADER + 256 rows × 256 columns, six in a row.
    assert all(p.shape == (tokens.HEADER + 256, 256, 3) for p in panels)
    assert grid.shape == (tokens.PAD + 282, tokens.PAD + 6 * 260, 3) and grid.dtype == np.uint8
    for panel, (y, x) in zip(panels, tokens.tile_origins(6, panels[0].shape[:2], 6)):
        np.testing.assert_array_equal(grid[y:y + panel.shape[0], x:x + panel.shape[1]], panel)
    crop_panel = panels[0][tokens.HEADER:]
    np.testing.assert_array_equal(crop_panel, tokens.upscale(frame_one["search_crop"], 2))


def _cell_classes(panel: np.ndarray, crop: np.ndarray, scale: int) -> np.ndarray:
    """Per token, which drawing the panel's cell interior matches best: 1 = tinted, 0 = darkened."""
    image = tokens.upscale(crop, scale).astype(np.float64)
    tinted = image * (1 - tokens.TINT_ALPHA) + tokens.TINT_ALPHA * np.asarray(tokens.INTERACT_COLOUR)
    dark = image * tokens.DARKEN
    cell = PATCH * scale
    grid = crop.shape[0] // PATCH
    classes = np.zeros(grid * grid, np.int8)
    for t in range(grid * grid):
        r, c = divmod(t, grid)
        window = np.s_[r * cell + 1:(r + 1) * cell, c * cell + 1:(c + 1) * cell]  # interior, grid line left out
        err_tint = np.abs(panel[window] - tinted[window]).max()
        err_dark = np.abs(panel[window] - dark[window]).max()
        # One of the two drawings, to the uint8 rounding (0.5 plus float64 noise of the blend).
        assert min(err_tint, err_dark) <= 0.5 + 1e-9, (t, err_tint, err_dark)
        classes[t] = err_tint < err_dark
    return classes


def test_overlay_marks_exactly_the_chosen_tokens(frame_one):
    crop, decisions = frame_one["search_crop"], frame_one["decisions"]
    assert all(0 < d.sum() < d.size for d in decisions)  # both classes in every layer: the check can fail
    panels = tokens.token_panels(crop, decisions, frame_one["score_map"], frame_one["crop_box"], PATCH)
    for layer in range(3):
        panel = panels[1 + layer][tokens.HEADER:].astype(np.float64)
        np.testing.assert_array_equal(_cell_classes(panel, crop, 2), decisions[layer])
        # Grid lines on the first row / column of every 32 px cell.
        assert np.all(panel[::32, :] == tokens.GRID_COLOUR) and np.all(panel[:, ::32] == tokens.GRID_COLOUR)
    # A changed choice changes exactly that cell.
    flipped = decisions[0].copy()
    flipped[5] = 1 - flipped[5]
    redrawn = tokens.overlay_decisions(crop, flipped, PATCH, 2).astype(np.float64)
    np.testing.assert_array_equal(_cell_classes(redrawn, crop, 2), flipped)


def test_score_panel_is_hottest_at_the_score_maximum(frame_one):
    score = frame_one["score_map"][..., 0]
    heat = tokens.heat_map(score, 256).astype(np.int64)
    centres = heat[16::32, 16::32]  # one pixel per cell, at its centre
    # Read the colours back as levels 0..255 through the JET table (nearest colour).
    jet = cv2.cvtColor(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET),
                       cv2.COLOR_BGR2RGB)[0].astype(np.int64)
    levels = np.argmin(np.abs(centres[:, :, None, :] - jet[None, None]).sum(-1), axis=-1)
    assert np.unravel_index(np.argmax(levels), levels.shape) == np.unravel_index(np.argmax(score), score.shape)
    assert levels.max() >= 240 and levels.min() <= 15  # min–max scaled: the full colour range is used


def test_box_panel_outlines_the_predicted_box(frame_one):
    panels = tokens.token_panels(frame_one["search_crop"], frame_one["decisions"], frame_one["score_map"],
                                 frame_one["crop_box"], PATCH)
    boxed = panels[-1][tokens.HEADER:]
    green = np.all(boxed == tokens.BOX_COLOUR, axis=-1)
    assert green.any() and not np.all(panels[0][tokens.HEADER:] == tokens.BOX_COLOUR, axis=-1).any()
    x, y, w, h = tokens.crop_box_to_xywh(frame_one["crop_box"], 256)
    rows, cols = np.nonzero(green)
    # Every green pixel lies on the outline (thickness 2 → within 2 px of an edge after rounding).
    near_x = (np.abs(cols - x) <= 2) | (np.abs(cols - (x + w)) <= 2)
    near_y = (np.abs(rows - y) <= 2) | (np.abs(rows - (y + h)) <= 2)
    assert np.all(near_x | near_y)


def test_save_png_round_trip(tmp_path, frame_one):
    grid = tokens.tracker_token_grid(frame_one, PATCH, columns=3)
    assert grid.shape == (tokens.PAD + 2 * 282, tokens.PAD + 3 * 260, 3)
    path = tokens.save_png(tmp_path / "sub" / "grid.png", grid)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, grid)  # PNG is lossless


def test_token_mask_rejects_a_wrong_count():
    with pytest.raises(ValueError, match="8×8 token grid"):
        tokens.token_mask(np.zeros(63), 8)
