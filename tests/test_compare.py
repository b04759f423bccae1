"""``python -m grm_jax.compare`` on the official reference file."""

from __future__ import annotations

from grm_jax import compare
from grm_jax.convert import pth_io
from helpers import OFFICIAL, config_spec

TINY_CONFIG = config_spec("tiny")
REFERENCE = str(OFFICIAL / "grm_tiny" / "outputs.npz")


def test_compare_passes_on_the_official_checkpoint(capsys):
    code = compare.main(["--config", TINY_CONFIG, "--checkpoint", str(OFFICIAL / "grm_tiny" / "state_dict.pth"),
                         "--reference", REFERENCE, "--atol", "1e-5", "--rtol", "1e-5"])
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
    code = compare.main(["--config", TINY_CONFIG, "--checkpoint", str(tmp_path / "perturbed.pth"),
                         "--reference", REFERENCE, "--atol", "1e-5"])
    assert code == 1
    assert " NO" in capsys.readouterr().out
