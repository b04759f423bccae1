"""A checkpoint loaded with the model config it was trained with (grm_jax.checkpoints.load_checkpoint_variables);
server submissions (grm_jax.evaluate.run)."""

from __future__ import annotations

import zipfile

import cv2
import numpy as np
import pytest

from grm_jax import checkpoints
from grm_jax.checkpoints import load_checkpoint_variables
from grm_jax.evaluate.run import evaluate
from grm_jax.models import build_model, example_inputs, host_init
from helpers import load_config


@pytest.fixture(scope="module")
def narrow_head_checkpoint(tmp_path_factory):
    """An Orbax checkpoint of the tiny GRM trained with head_channels=32 (the default tiny config has 64)."""
    config = load_config("tiny")
    config.model.head_channels = 32
    variables = host_init(build_model(config), *example_inputs(config))
    directory = tmp_path_factory.mktemp("ckpt")
    checkpoints.save_variables(directory, variables, config, step=7)
    return directory, variables


def test_without_config_the_checkpoints_model_config_is_used(narrow_head_checkpoint, capsys):
    directory, saved = narrow_head_checkpoint
    config = load_config("tiny")
    config.model.attention = "fused"  # a run option: kept, not taken from the checkpoint
    variables = load_checkpoint_variables(directory, config, config_given=False)
    assert config.model.head_channels == 32 and config.model.attention == "fused"
    assert "model.head_channels = 32 (--config: 64)" in capsys.readouterr().out
    model = build_model(config)
    model.apply(variables, *example_inputs(config))  # the weights fit the adopted config


def test_a_conflicting_config_is_named(narrow_head_checkpoint):
    directory, _ = narrow_head_checkpoint
    config = load_config("tiny")
    with pytest.raises(ValueError, match=r"model.head_channels = 32 \(--config: 64\)\. Drop --config"):
        load_checkpoint_variables(directory, config, config_given=True)


def test_got10k_test_evaluation_makes_the_submission(tmp_path, tiny_model_and_variables):
    """No ground truth beyond frame 0: the result files are tracked and zipped in the server's format."""
    _, variables = tiny_model_and_variables
    config = load_config("tiny")
    root = tmp_path / "got10k" / "test"
    names = ["GOT-10k_Test_000001", "GOT-10k_Test_000002"]
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(1, 5):
            cv2.imwrite(str(root / name / f"{i:08d}.jpg"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        (root / name / "groundtruth.txt").write_text("30,20,40,30\n")
    (root / "list.txt").write_text("\n".join(names) + "\n")
    out = evaluate(config, variables, "got10k_test", str(tmp_path / "got10k"), tmp_path / "results", batch_size=2,
                   progress=False)
    with zipfile.ZipFile(out["submission"]["submit_zip"]) as archive:
        members = set(archive.namelist())
    for name in names:
        assert f"{name}/{name}_001.txt" in members and f"{name}/{name}_time.txt" in members
    assert "upload" in out["note"]
