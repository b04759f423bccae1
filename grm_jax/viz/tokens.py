"""One frame's token division as a PNG grid: which search tokens the model let interact with the template.

For a search crop and the model's outputs at that frame, :func:`token_grid` tiles these panels (each titled):

1. the search crop;
2. one panel per division layer (blocks 1 … L−1): the crop with every patch_size × patch_size cell of a token
   classified *interacting* (class 1) tinted, ``crop·(1 − TINT_ALPHA) + TINT_ALPHA·INTERACT_COLOUR``, and every
   *search-only* token (class 0) darkened, ``crop·DARKEN``, with the cell grid drawn in ``GRID_COLOUR`` on the first
   row and column of each cell;
3. the score map, bilinearly upsampled to the crop and blended over it as a heat map;
4. the crop with the predicted box.

Token t of a layer covers cell (row t // G, column t mod G), G = crop_size / patch_size (row-major, as the model
flattens the patches). Panels are upscaled by an integer factor (nearest neighbour) so a small crop stays legible.
Pure functions on uint8 RGB arrays; :func:`save_png` writes one.
"""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np

INTERACT_COLOUR = (255, 140, 0)  # orange tint on tokens that interact with the template (class 1)
TINT_ALPHA = 0.5
DARKEN = 0.35  # search-only tokens (class 0) keep 35 % of their brightness
GRID_COLOUR = (255, 255, 255)
BOX_COLOUR = (0, 255, 0)
HEADER = 22  # px of title strip above every panel
PAD = 4  # px between panels


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor (each pixel becomes a scale × scale block)."""
    if scale == 1:
        return image
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def default_scale(size: int, target: int = 256) -> int:
    """Smallest integer factor that brings a ``size`` px crop to at least ``target`` px (1 for big crops)."""
    return max(1, math.ceil(target / size))


def token_mask(decisions: np.ndarray, grid: int) -> np.ndarray:
    """(Ns,) token classes → (grid, grid) bool, True where the token interacts (class 1); row-major layout."""
    decisions = np.asarray(decisions)
    if decisions.shape != (grid * grid,):
        raise ValueError(f"decisions of shape {decisions.shape} do not fill a {grid}×{grid} token grid")
    return decisions.reshape(grid, grid) == 1


def cell_mask(mask: np.ndarray, cell: int) -> np.ndarray:
    """(G,G) per-token mask → (G·cell, G·cell) per-pixel mask (each token covers a cell × cell block)."""
    return upscale(mask, cell)


def draw_cell_grid(image: np.ndarray, cell: int, colour=GRID_COLOUR) -> np.ndarray:
    """Copy of ``image`` with a 1-px line on the first row and first column of every cell × cell cell."""
    out = image.copy()
    out[::cell, :] = colour
    out[:, ::cell] = colour
    return out


def overlay_decisions(crop: np.ndarray, decisions: np.ndarray, patch_size: int, scale: int = 1) -> np.ndarray:
    """The crop (upscaled by ``scale``) with interacting tokens tinted and search-only tokens darkened.

    Interacting cells: round(crop·(1 − TINT_ALPHA) + TINT_ALPHA·INTERACT_COLOUR); search-only cells:
    round(crop·DARKEN); then the cell grid (cells of patch_size·scale px).
    """
    grid = crop.shape[0] // patch_size
    cell = patch_size * scale
    image = upscale(crop, scale).astype(np.float32)
    interacting = cell_mask(token_mask(decisions, grid), cell)[..., None]
    tinted = image * (1 - TINT_ALPHA) + TINT_ALPHA * np.asarray(INTERACT_COLOUR, np.float32)
    out = np.where(interacting, tinted, image * DARKEN)
    return draw_cell_grid(np.clip(np.round(out), 0, 255).astype(np.uint8), cell)


def heat_map(score_map: np.ndarray, size: int) -> np.ndarray:
    """(S,S) score map → (size,size,3) uint8 RGB heat map (bilinear upsampling, JET colours, min–max scaled)."""
    score = np.asarray(score_map, np.float32).squeeze()
    span = float(score.max() - score.min())
    norm = (score - score.min()) / span if span > 0 else np.zeros_like(score)
    up = cv2.resize(norm, (size, size), interpolation=cv2.INTER_LINEAR)
    colours = cv2.applyColorMap(np.round(up * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)


def score_overlay(crop: np.ndarray, score_map: np.ndarray, scale: int = 1, alpha: float = 0.55) -> np.ndarray:
    """The crop (upscaled) with the upsampled score map blended over it: crop·(1 − α) + heat·α."""
    image = upscale(crop, scale)
    heat = heat_map(score_map, image.shape[0])
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0.0)


def crop_box_to_xywh(crop_box: np.ndarray, size: int) -> np.ndarray:
    """Normalised (cx, cy, w, h) in a crop → pixel (x, y, w, h) in a size × size image."""
    cx, cy, w, h = (float(v) * size for v in np.asarray(crop_box, np.float64))
    return np.array([cx - w / 2, cy - h / 2, w, h])


def draw_box(image: np.ndarray, box_xywh, colour=BOX_COLOUR, thickness: int = 2) -> np.ndarray:
    """Copy of ``image`` with the (x, y, w, h) pixel box outlined (nothing drawn for a non-finite box)."""
    out = image.copy()
    box = np.asarray(box_xywh, np.float64)
    if np.all(np.isfinite(box)):
        x, y, w, h = box
        cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                      tuple(int(c) for c in colour), thickness)
    return out


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """The panel under a HEADER-px dark strip holding ``title``."""
    strip = np.full((HEADER, panel.shape[1], 3), 30, np.uint8)
    cv2.putText(strip, title, (4, HEADER - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def tile_origins(count: int, shape: tuple[int, int], columns: int) -> list[tuple[int, int]]:
    """(y, x) of each of ``count`` panels of ``shape`` (h, w) laid out row by row, PAD px apart and around."""
    h, w = shape
    return [(PAD + (i // columns) * (h + PAD), PAD + (i % columns) * (w + PAD)) for i in range(count)]


def tile(panels: list[np.ndarray], columns: int, background: int = 0) -> np.ndarray:
    """Panels of one shape in a grid of ``columns`` columns (positions from :func:`tile_origins`)."""
    h, w = panels[0].shape[:2]
    rows = math.ceil(len(panels) / columns)
    out = np.full((PAD + rows * (h + PAD), PAD + min(columns, len(panels)) * (w + PAD), 3), background, np.uint8)
    for panel, (y, x) in zip(panels, tile_origins(len(panels), (h, w), columns)):
        if panel.shape[:2] != (h, w):
            raise ValueError(f"panel of shape {panel.shape} among panels of {(h, w)}")
        out[y:y + h, x:x + w] = panel
    return out


def token_panels(crop: np.ndarray, decisions: np.ndarray, score_map: np.ndarray, crop_box=None,
                 patch_size: int = 16, scale: int | None = None) -> list[np.ndarray]:
    """The titled panels of :func:`token_grid`, in order: crop, one per division layer, score map, box.

    ``crop`` (S,S,3) uint8 search crop; ``decisions`` (L−1, Ns) token classes (1 = interacts); ``score_map``
    (S/p, S/p) or (S/p, S/p, 1); ``crop_box`` normalised (cx, cy, w, h) in the crop (None: no box drawn).
    """
    crop = np.asarray(crop, np.uint8)
    decisions = np.asarray(decisions)
    scale = default_scale(crop.shape[0]) if scale is None else scale
    image = upscale(crop, scale)
    panels = [titled(image, "search crop")]
    for layer, choice in enumerate(decisions):
        count = int(np.sum(choice == 1))
        panels.append(titled(overlay_decisions(crop, choice, patch_size, scale),
                             f"block {layer + 1}: {count}/{choice.size} interact"))
    boxed = score_overlay(crop, score_map, scale)
    plain = image
    if crop_box is not None:
        box = crop_box_to_xywh(crop_box, image.shape[0])
        boxed, plain = draw_box(boxed, box), draw_box(image, box)
    panels.append(titled(boxed, f"score map (max {float(np.max(score_map)):.2f})"))
    panels.append(titled(plain, "predicted box"))
    return panels


def token_grid(crop: np.ndarray, decisions: np.ndarray, score_map: np.ndarray, crop_box=None,
               patch_size: int = 16, scale: int | None = None, columns: int | None = None) -> np.ndarray:
    """The whole grid (uint8 RGB) of :func:`token_panels`, ``columns`` panels a row (default: all up to 6)."""
    panels = token_panels(crop, decisions, score_map, crop_box, patch_size, scale)
    return tile(panels, columns or min(len(panels), 6))


def tracker_token_grid(outputs: dict, patch_size: int, **kwargs) -> np.ndarray:
    """:func:`token_grid` from one slot's row of ``BatchTracker.track``'s outputs (``search_crop``,
    ``decisions``, ``score_map``, ``crop_box``)."""
    return token_grid(outputs["search_crop"], outputs["decisions"], outputs["score_map"], outputs.get("crop_box"),
                      patch_size, **kwargs)


def save_png(path, image: np.ndarray) -> pathlib.Path:
    """Write an RGB uint8 image as PNG (parent folders created); returns the path. Raises if OpenCV cannot."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")
    return path
