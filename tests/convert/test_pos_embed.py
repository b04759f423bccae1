"""PyTorch-exact bicubic resizing of position-embedding tables (official ``finetune_track``;
docs/model.md#position-embeddings)."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grm_jax.convert.pos_embed import bicubic_resize_torch, bicubic_weight_matrix, resize_pos_embed, sincos_pos_embed
from grm_jax.convert.pth_io import load_pth

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "official" / "grm_tiny" / "state_dict.pth"

# (embed dim, output grid sizes): ViT-B/256 (template 128 px → 8, search 256 px → 16) and
# ViT-L/320 (template 128 px → 8, search 320 px → 20); both start from the 14×14 ImageNet-224 grid.
SHAPES = [(768, 8), (768, 16), (1024, 8), (1024, 20)]


@pytest.fixture(scope="module")
def tiny_state():
    return load_pth(FIXTURE)


def _torch_resize(table: np.ndarray, out: int) -> np.ndarray:
    """The official code path: (1, 1+196, D) → drop cls → (1, D, 14, 14) → F.interpolate → (1, out², D)."""
    dim = table.shape[-1]
    grid = torch.from_numpy(table[:, 1:, :]).reshape(1, 14, 14, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(out, out), mode="bicubic", align_corners=False)
    return resized.flatten(2).transpose(1, 2).numpy()


def _loop_reference(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent transcription: per output pixel, 4×4 taps of the A = −0.75 cubic kernel, clamped indices."""
    a = -0.75

    def kernel(d):
        d = abs(d)
        if d <= 1:
            return (a + 2) * d**3 - (a + 3) * d**2 + 1
        if d < 2:
            return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
        return 0.0

    in_h, in_w, _ = grid.shape
    out = np.zeros((out_h, out_w, grid.shape[2]))
    for p in range(out_h):
        sy = (p + 0.5) * in_h / out_h - 0.5
        y0 = math.floor(sy)
        for q in range(out_w):
            sx = (q + 0.5) * in_w / out_w - 0.5
            x0 = math.floor(sx)
            for dy in (-1, 0, 1, 2):
                wy = kernel(sy - (y0 + dy))
                yy = min(max(y0 + dy, 0), in_h - 1)
                for dx in (-1, 0, 1, 2):
                    wx = kernel(sx - (x0 + dx))
                    xx = min(max(x0 + dx, 0), in_w - 1)
                    out[p, q] += wy * wx * grid[yy, xx]
    return out


def test_fixture_pos_embed_z_and_x_are_reproduced(tiny_state):
    table = tiny_state["backbone.pos_embed"]  # (1, 197, 192)
    z = resize_pos_embed(table, (14, 14), (4, 4))  # template 64 px / 16
    x = resize_pos_embed(table, (14, 14), (8, 8))  # search 128 px / 16
    assert z.dtype == np.float32 and z.shape == tiny_state["backbone.pos_embed_z"].shape == (1, 16, 192)
    assert x.dtype == np.float32 and x.shape == tiny_state["backbone.pos_embed_x"].shape == (1, 64, 192)
    # ≤ 1e-6: the official tables were computed by torch in float32 (|values| < 0.1, so float32 rounding of
    # the 16-term sums is ~1e-8); we compute in float64 and round once.
    assert np.abs(z - tiny_state["backbone.pos_embed_z"]).max() <= 1e-6
    assert np.abs(x - tiny_state["backbone.pos_embed_x"]).max() <= 1e-6


@pytest.mark.parametrize("dim,out", SHAPES)
def test_matches_torch_float64_exactly(dim, out):
    rng = np.random.default_rng(dim + out)
    table = rng.standard_normal((1, 197, dim))
    ours = bicubic_resize_torch(table[0, 1:].reshape(14, 14, dim), out, out).reshape(1, out * out, dim)
    # ≤ 1e-12 on unit-variance data: same formula in the same precision, only summation order differs (~1e-15)
    assert np.abs(ours - _torch_resize(table, out)).max() <= 1e-12


@pytest.mark.parametrize("dim,out", SHAPES)
def test_matches_torch_float32_on_pos_embed_scale_tables(dim, out):
    rng = np.random.default_rng(100 + dim + out)
    # trunc_normal(std 0.02), the scale of ViT pos-embeds at init and of the fixture's table
    table = (0.02 * rng.standard_normal((1, 197, dim))).astype(np.float32)
    ours = resize_pos_embed(table, (14, 14), (out, out))
    assert ours.dtype == np.float32 and ours.shape == (1, out * out, dim)
    # ≤ 1e-6: torch float32 rounds scale/coordinates/weights to float32 (e.g. 14/20 = 0.7 is inexact; its
    # impulse response is off by ≈4e-7), i.e. ≈1e-6 relative; at |values| ≲ 0.1 that is ≲ 1e-7 absolute.
    assert np.abs(ours - _torch_resize(table, out)).max() <= 1e-6


@pytest.mark.parametrize("dim,out", SHAPES)
def test_matches_torch_float32_on_unit_variance_tables(dim, out):
    rng = np.random.default_rng(200 + dim + out)
    table = rng.standard_normal((1, 197, dim)).astype(np.float32)
    # ≤ 1e-5 here (|values| up to ≈5): torch's own float32 result differs from its float64 one by ≈4e-6 for
    # 14→20 (weights rounded to float32), and we are within float32 rounding of the float64 result.
    assert np.abs(resize_pos_embed(table, (14, 14), (out, out)) - _torch_resize(table, out)).max() <= 1e-5


@pytest.mark.parametrize("dim,out", [(768, 8), (768, 16), (1024, 20)])
def test_matches_independent_loop_transcription(dim, out):
    rng = np.random.default_rng(300 + dim + out)
    grid = rng.standard_normal((14, 14, dim))
    # ≤ 1e-12: both float64, only the evaluation order of the same kernel sums differs
    assert np.abs(bicubic_resize_torch(grid, out, out) - _loop_reference(grid, out, out)).max() <= 1e-12


def test_weight_matrix_properties():
    for n_in, n_out in [(14, 4), (14, 8), (14, 16), (14, 20), (7, 7)]:
        m = bicubic_weight_matrix(n_in, n_out)
        # rows sum to 1 (the kernel is a partition of unity and clamping only moves weight onto the border)
        assert np.abs(m.sum(axis=1) - 1.0).max() <= 1e-12
    assert np.array_equal(bicubic_weight_matrix(7, 7), np.eye(7))  # same size: t = 0 → identity
    # non-square grids and the (H, W) layout: 2-D input resizes like a single channel
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((6, 10))
    ref = F.interpolate(torch.from_numpy(grid)[None, None], size=(3, 13), mode="bicubic", align_corners=False)
    # ≤ 1e-12: float64 on both sides
    assert np.abs(bicubic_resize_torch(grid, 3, 13) - ref[0, 0].numpy()).max() <= 1e-12


def test_resize_pos_embed_patch_start_index_and_shape_errors():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((1, 2 + 196, 16)).astype(np.float32)  # distilled DeiT: cls + dist tokens
    ours = resize_pos_embed(table, (14, 14), (8, 8), patch_start_index=2)
    # bit-equal to resizing the table without its first two rows (same computation)
    assert np.array_equal(ours, resize_pos_embed(table[:, 1:], (14, 14), (8, 8), patch_start_index=1))
    with pytest.raises(ValueError, match="pos_embed must be"):
        resize_pos_embed(table, (14, 14), (8, 8), patch_start_index=1)


def test_jax_image_resize_bicubic_is_a_different_kernel(tiny_state):
    """Documents why we do not use jax.image.resize: Keys A = −0.5, and antialiasing when down-sampling."""
    table = tiny_state["backbone.pos_embed"]
    grid = table[0, 1:].reshape(14, 14, -1)
    for out in (8, 16):  # 8: down-sampling (jax antialiases); 16: up-sampling (kernel A differs)
        ours = resize_pos_embed(table, (14, 14), (out, out)).reshape(out, out, -1)
        theirs = np.asarray(jax.image.resize(jnp.asarray(grid), (out, out, grid.shape[-1]), method="bicubic"))
        # > 1e-3 on the fixture's real table (|values| < 0.1): far beyond float32 noise (1e-8), so a
        # jax.image.resize-based port could not reproduce the official pos_embed_z / pos_embed_x
        assert np.abs(ours - theirs).max() > 1e-3


def test_sincos_pos_embed_channels_follow_the_formula():
    # Token t = r·grid + c: channels [sin(cω), cos(cω), sin(rω), cos(rω)], ω_k = 10000^(−k/(dim/4)).
    dim, grid = 16, 5
    table = sincos_pos_embed(dim, grid)
    assert table.shape == (1, 1 + grid * grid, dim) and table.dtype == np.float32
    np.testing.assert_array_equal(table[0, 0], 0.0)  # the cls row
    omega = 10000.0 ** (-np.arange(4) / 4)
    r, c = 3, 1
    expected = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)])
    np.testing.assert_allclose(table[0, 1 + r * grid + c], expected, rtol=0, atol=1e-6)  # float32 rounding


def test_sincos_pos_embed_similarity_depends_only_on_the_offset():
    # ⟨p(r,c), p(r',c')⟩ = Σ_k cos((c − c')ω_k) + cos((r − r')ω_k): the same for every pair at the same offset.
    table = sincos_pos_embed(32, 6)[0, 1:].astype(np.float64).reshape(6, 6, 32)
    a = table[1, 2] @ table[3, 5]
    b = table[2, 0] @ table[4, 3]
    omega = 10000.0 ** (-np.arange(8) / 8)
    np.testing.assert_allclose([a, b], np.sum(np.cos(3 * omega)) + np.sum(np.cos(2 * omega)), rtol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(18, 4)
