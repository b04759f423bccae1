"""Ten steps of the official trainer (tests/fixtures/official/train_trajectory) replayed through train.py's code."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import losses
from grm_jax.convert.state_dict import state_dict_to_variables, variables_to_state_dict
from grm_jax.models import build_model, example_inputs
from grm_jax.train import trajectory as tj
from helpers import OFFICIAL, ROOT, load_config

FIXTURE = OFFICIAL / "train_trajectory" / "trajectory.npz"


@pytest.fixture(scope="module")
def recorded():
    return tj.load(FIXTURE)


@pytest.fixture(scope="module")
def result(recorded):
    return tj.compare(tj.replay(load_config("tiny"), recorded), recorded)


def test_every_step_follows_the_official_trainer(result):
    rows = result["rows"]
    assert len(rows) == 10
    for r in rows:
        loss_tolerance = 1e-5 if r["step"] == 0 else 1e-4  # float32 rounding through 10 AdamW steps
        for key in tj.LOSSES:
            assert r[key] <= loss_tolerance, (r["step"], key, r[key])
        assert r["iou"] <= 1e-5, r  # absolute, IoU in [0, 1]
        assert r["grad_norm"] <= 1e-4, r  # pre-clip global norm
        assert r["lr"] <= 1e-6, r  # the float32 representation of the recorded rates (relative 2.5e-8 seen)
        assert r["param_norm"] <= 1e-4, r  # every parameter's norm after the step


def test_final_state_equals_the_official_one(result):
    final = result["final"]
    assert final["params"] <= 1e-4  # all parameters as one vector (measured 3.9e-6)
    assert final["moved"] <= 1e-3  # of the 1.3 % that training moved them (measured 3.2e-5)
    assert final["worst_tensor"][1] <= 1e-3, final["worst_tensor"]  # measured 2.3e-5
    assert final["worst_bn"][1] <= 1e-4, final["worst_bn"]  # running statistics, measured 4.2e-7
    # conv biases before BatchNorm and those running means follow rounding noise (see tj.noise_driven)
    assert final["worst_noise"][1] <= final["noise_bound"], final["worst_noise"]  # measured 1.4e-4 vs 5.1e-3
    assert final["ok"]


def test_the_exempt_biases_really_get_no_gradient(recorded):
    """The claim behind tj.noise_driven, measured: in train() mode each such bias's gradient is rounding noise,
    ≤ 1e-5 of its convolution weight's gradient norm."""
    config = tj.replay_config(load_config("tiny"), recorded)
    model = build_model(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example_inputs(config)))
    variables = state_dict_to_variables(recorded.state_dict("init"), shapes)
    batch = {k: v[0] for k, v in tj.step_batch(recorded, 0).items()}

    def loss_fn(params):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch["template"],
                             batch["search"], batch["template_mask"], train=True, mutable=["batch_stats"],
                             gumbel_noise=jnp.transpose(batch["gumbel_noise"], (1, 0, 2, 3)))
        return losses.grm_loss(out["pred_boxes"], out["score_map"], batch["search_anno"],
                               search_size=model.config.search_size)[0]

    grads = variables_to_state_dict({"params": jax.grad(loss_fn)(variables["params"]), "batch_stats": {}})
    biases = sorted(k for k in tj.noise_driven(recorded.state_dict("init")) if k.endswith(".bias"))
    assert len(biases) == 12  # conv1..conv4 of the ctr, size and offset branches
    for key in biases:
        weight = key.replace(".bias", ".weight")
        assert np.linalg.norm(grads[key]) <= 1e-5 * np.linalg.norm(grads[weight]), key


def test_a_wrong_recipe_is_caught(recorded):
    """The comparison can fail: a weight decay of 1e-2 instead of 1e-4 leaves the official trajectory."""
    wrong = dataclasses.replace(recorded, meta=dict(recorded.meta, weight_decay=1e-2))
    result = tj.compare(tj.replay(load_config("tiny"), wrong), recorded)
    assert not result["final"]["ok"] and result["final"]["moved"] > 1e-3


def test_load_names_what_is_missing(tmp_path, recorded):
    arrays = {k: v for k, v in recorded.arrays.items() if k != "grad_norm"}
    np.savez(tmp_path / "trajectory.npz", **arrays)
    with pytest.raises(tj.TrajectoryError, match="meta.json: not found"):
        tj.load(tmp_path / "trajectory.npz")
    (tmp_path / "meta.json").write_text((FIXTURE.parent / "meta.json").read_text())
    with pytest.raises(tj.TrajectoryError, match=r"missing \['grad_norm'\]"):
        tj.load(tmp_path / "trajectory.npz")


@pytest.mark.timeout(600)
def test_compare_trajectory_command(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    run = lambda ref: subprocess.run([sys.executable, "-m", "grm_jax.compare", "trajectory", "--config",  # noqa: E731
                                      "configs/grm.py:tiny", "--reference", str(ref)], cwd=ROOT, env=env,
                                     capture_output=True, text=True, timeout=500)
    proc = run(FIXTURE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all within tolerance" in proc.stdout and len(proc.stdout.splitlines()) >= 13  # header + 10 steps
    proc = run(tmp_path / "none.npz")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and len(proc.stderr.splitlines()) == 1
