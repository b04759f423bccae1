"""``python -m grm_jax.compare`` on the official reference file."""

from __future__ import annotations

from grm_jax import compare
from grm_jax.convert import pth_io
from helpers import OFFICIAL, config_spec

TINY_CONFIG = config_spec("tiny")
REFERENCE = str(OFFICIAL / "grm_tiny" / "outputs.npz")
PTH = str(OFFICIAL / "grm_tiny" / "state_dict.pth")
PROG = "grm-compare"


def test_compare_passes_on_the_official_checkpoint(capsys):
    code = compare.main([PROG, "--config", TINY_CONFIG, "--checkpoint", PTH, "--reference", REFERENCE, "--atol",
                         "1e-5", "--rtol", "1e-5"])
    out = capsys.readouterr().out
    assert code == 0, out
    # Per-layer rows for the three division layers, eval at both thresholds and train.
    for needle in ("eval τ=0 ", "eval τ=0.4", "train", "divide_logp", "decisions", "Ls/giou"):
        assert needle in out, needle
    assert out.count("decisions") == 9  # 3 layers × (τ=0, τ=0.4, train)


def test_compare_fails_on_perturbed_weights(tmp_path, tiny_state_dict, capsys):
    state = dict(tiny_state_dict)
    bias = state["backbone.blocks.3.mlp.fc2.bias"].copy()
    bias[0] += 1e-2  # one channel only: a uniform shift would be removed by the final LayerNorm
    state["backbone.blocks.3.mlp.fc2.bias"] = bias
    pth_io.save_pth(state, tmp_path / "perturbed.pth")
    code = compare.main([PROG, "--config", TINY_CONFIG, "--checkpoint", str(tmp_path / "perturbed.pth"),
                         "--reference", REFERENCE, "--atol", "1e-5"])
    assert code == 1
    assert " NO" in capsys.readouterr().out


def test_main_twice_in_one_process_with_other_tolerances(capsys):
    """The same comparison with two ``--atol`` values: each call applies its own."""
    args = [PROG, "--config", TINY_CONFIG, "--checkpoint", PTH, "--reference", REFERENCE]
    assert compare.main([*args, "--atol", "1e-5"]) == 0
    assert "(atol 1e-05, loss rtol 0.0001)" in capsys.readouterr().out
    assert compare.main([*args, "--atol", "1e-12"]) == 1
    assert "(atol 1e-12, loss rtol 0.0001)" in capsys.readouterr().out


def test_unreadable_inputs_exit_2_in_one_line(tmp_path, capsys):
    assert compare.main([PROG, "--checkpoint", str(tmp_path / "none"), "--reference", REFERENCE]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no checkpoint at {tmp_path / 'none'} (an Orbax directory or an official .pth / .pth.tar)"]
    assert compare.main([PROG, "trajectory", "--config", TINY_CONFIG, "--reference", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "t.npz" in err[0]
    assert compare.main([PROG, "trajectory", "--config", TINY_CONFIG]) == 2  # --reference is required
    assert "--reference" in capsys.readouterr().err
