"""Whole-checkpoint conversion: official .pth ↔ Orbax, safetensors, MAE/DeiT backbone init, error messages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from flax import traverse_util

from grm_jax import checkpoints
from grm_jax.convert import official, pth_io
from grm_jax.convert.__main__ import main as convert_main
from grm_jax.convert.state_dict import StateDictMismatchError
from helpers import OFFICIAL, ROOT, config_spec, load_config

PROG = "grm-convert"
TINY_PTH = OFFICIAL / "grm_tiny" / "state_dict.pth"
TINY_CONFIG = config_spec("tiny")


def _assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)  # bit-exact: no arithmetic happens


def test_pth_to_orbax_to_pth_is_bit_exact(tmp_path, tiny_state_dict):
    assert convert_main([PROG, "to-orbax", "--config", TINY_CONFIG, "--input", str(TINY_PTH),
                         "--output", str(tmp_path / "ckpt")]) == 0
    variables, config = checkpoints.load_variables(tmp_path / "ckpt")
    assert config.model.embed_dim == 192 and config.model.search_size == 128  # the config travels along
    assert convert_main([PROG, "to-torch", "--checkpoint", str(tmp_path / "ckpt"), "--output",
                         str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    _assert_same_state({k: v.numpy() for k, v in back.items()}, tiny_state_dict)
    # The official model class is not needed to prove strict loading: key set, shapes and dtypes equal the
    # official state dict exactly (checked above), which is what load_state_dict(strict=True) checks.


def test_pth_tar_with_net_and_settings(tmp_path, tiny_state_dict):
    """A training checkpoint: ``net`` plus other entries; the state dict is found under ``net``."""
    pth_io.save_pth({"net": tiny_state_dict, "epoch": 300, "net_type": "GRM"}, tmp_path / "GRM_ep0300.pth.tar")
    variables = official.official_to_variables(tmp_path / "GRM_ep0300.pth.tar", load_config("tiny"))
    flat = traverse_util.flatten_dict(variables["params"])
    np.testing.assert_array_equal(flat[("backbone", "pos_embed_z")], tiny_state_dict["backbone.pos_embed_z"])


def test_safetensors_in_and_out(tmp_path, tiny_state_dict):
    config = load_config("tiny")
    variables = official.official_to_variables(TINY_PTH, config)
    official.write_state_dict(variables, tmp_path / "tiny.safetensors")
    again = official.official_to_variables(tmp_path / "tiny.safetensors", config)
    official.write_state_dict(again, tmp_path / "tiny.pth")
    _assert_same_state(pth_io.load_pth(tmp_path / "tiny.pth"), tiny_state_dict)


def test_round_trip_without_torch(tmp_path, tiny_state_dict):
    """.pth → Orbax → .pth in a process where importing torch fails; compared here with torch.load."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from grm_jax.convert.__main__ import main
        assert main(["grm-convert", "to-orbax", "--config", {TINY_CONFIG!r}, "--input", {str(TINY_PTH)!r},
                     "--output", {str(tmp_path / "ckpt")!r}]) == 0
        assert main(["grm-convert", "to-torch", "--checkpoint", {str(tmp_path / "ckpt")!r},
                     "--output", {str(tmp_path / "back.pth")!r}]) == 0
        assert "torch" not in sys.modules or sys.modules["torch"] is None
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    _assert_same_state({k: v.numpy() for k, v in back.items()}, tiny_state_dict)


def _mae_like(tiny_state_dict, distilled=False):
    """An ImageNet-style backbone file made from the fixture: ViT keys without prefix, no division MLPs, plus
    entries GRM has no place for (a classifier head; the distillation token for DeiT-distilled)."""
    state = {k[len("backbone."):]: v for k, v in tiny_state_dict.items()
             if k.startswith("backbone.") and "divide_predict" not in k and "pos_embed_" not in k}
    state["head.weight"] = np.ones((10, 192), np.float32)
    if distilled:
        state["dist_token"] = np.ones((1, 1, 192), np.float32)
        table = state["pos_embed"]
        state["pos_embed"] = np.concatenate([table[:, :1], np.full((1, 1, 192), 7.0, np.float32), table[:, 1:]], 1)
    return state


@pytest.mark.parametrize("distilled", [False, True])
def test_backbone_from_pretrained(tmp_path, tiny_state_dict, distilled):
    path = tmp_path / ("deit_base_distilled_patch16_224-df68dfff.pth" if distilled else "mae_pretrain_vit_base.pth")
    pth_io.save_pth({"model": _mae_like(tiny_state_dict, distilled)}, path)
    config = load_config("tiny")
    fresh = official.init_variables(config, seed=3)
    variables, report = official.load_pretrained_backbone(fresh, path, config)
    assert report.patch_start_index == (2 if distilled else 1)
    assert "head.weight" in report.ignored and (("dist_token" in report.ignored) == distilled)
    flat = traverse_util.flatten_dict(variables["params"])
    fresh_flat = traverse_util.flatten_dict(fresh["params"])
    np.testing.assert_array_equal(flat[("backbone", "blocks_2", "attn", "qkv", "kernel")],
                                  tiny_state_dict["backbone.blocks.2.attn.qkv.weight"].T)
    # pos_embed_z / pos_embed_x re-derived from the 14×14 table by PyTorch bicubic equal the fixture's tables,
    # which the official finetune_track produced (float64 resize rounded once vs torch float32: ≤ 1e-6).
    for name in ("pos_embed_z", "pos_embed_x"):
        np.testing.assert_allclose(flat[("backbone", name)], tiny_state_dict[f"backbone.{name}"], atol=1e-6)
    # Division MLPs and head keep the fresh initialisation (docs/model.md#initialisation).
    for path_ in [("backbone", "blocks_1", "attn", "divide_predict_0", "kernel"),
                  ("box_head", "conv1_ctr_0", "kernel")]:
        np.testing.assert_array_equal(flat[path_], fresh_flat[path_])
    assert "box_head.conv1_ctr_0.kernel" in report.kept_fresh


def test_cli_init_backbone(tmp_path, tiny_state_dict):
    path = tmp_path / "mae_pretrain_vit_base.pth"
    pth_io.save_pth({"model": _mae_like(tiny_state_dict)}, path)
    assert convert_main([PROG, "init-backbone", "--config", TINY_CONFIG, "--pretrained", str(path),
                         "--output", str(tmp_path / "init")]) == 0
    variables, _ = checkpoints.load_variables(tmp_path / "init")
    flat = traverse_util.flatten_dict(variables["params"])
    np.testing.assert_array_equal(flat[("backbone", "norm", "scale")], tiny_state_dict["backbone.norm.weight"])


def test_wrong_config_for_checkpoint(tmp_path, capsys):
    """Tiny (D=192) weights with the ViT-B config: the error names the file, the config and mismatching keys."""
    with pytest.raises(StateDictMismatchError) as info:
        official.official_to_variables(TINY_PTH, load_config("B/256"))
    message = str(info.value)
    assert str(TINY_PTH) in message and "vit_base" in message
    assert "backbone.patch_embed.proj.weight: checkpoint (192, 3, 16, 16) vs model (768, 3, 16, 16)" in message
    code = convert_main([PROG, "to-orbax", "--config", config_spec("B/256"), "--input",
                         str(TINY_PTH), "--output", str(tmp_path / "x")])
    assert code == 1 and "shape mismatches" in capsys.readouterr().err


def test_truncated_checkpoint_is_named(tmp_path, capsys):
    data = TINY_PTH.read_bytes()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(data[: len(data) // 2])
    code = convert_main([PROG, "to-orbax", "--config", TINY_CONFIG, "--input", str(broken), "--output",
                         str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and str(broken) in err
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_missing_orbax_checkpoint_is_named(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.load_variables(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match="no finished checkpoint"):
        checkpoints.load_variables(tmp_path / "empty")
