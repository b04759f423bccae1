"""grm_jax/evaluate/diagnose.py on the fixture model and its recorded sequence."""

from __future__ import annotations

import numpy as np

from grm_jax.evaluate import diagnose
from grm_jax.evaluate.benchmarks import Sequence
from helpers import OFFICIAL, load_config


def test_errors_measure_centre_and_size():
    gt = np.array([[0, 0, 10, 10], [10, 10, 10, 10], [20, 20, 10, 10]], float)
    pred = np.array([[0, 0, 10, 10], [13, 14, 10, 10], [20, 20, 20, 10]], float)
    centre, size = diagnose.errors(pred, gt, None)
    np.testing.assert_allclose(centre, [5.0, 5.0])  # frame 0 is not scored
    np.testing.assert_allclose(size, [0.0, np.log(2.0)])  # signed: the second box is twice too large


def test_scaled_box_keeps_the_centre():
    box = diagnose.scaled_box([10, 20, 30, 40], 0.5)
    np.testing.assert_allclose(box, [17.5, 30, 15, 20])  # centre (25, 40) kept, size halved


def test_modes_on_the_fixture_sequence(tiny_model_and_variables):
    refs = dict(np.load(OFFICIAL / "tracker_refs.npz"))
    _, variables = tiny_model_and_variables
    config = load_config("tiny")
    frames = refs["frames"][:12]
    seq = Sequence("fixture", list(range(len(frames))), refs["gt"][:12].astype(np.float64), "otb")
    rows = {r["mode"]: r for r in diagnose.diagnose(config, variables, [seq], lambda i: frames[i])}
    scales = [f"re-centred, crop ×{s:.2f}" for s in diagnose.CROP_SCALES]
    assert list(rows) == [*diagnose.MODES, *scales, "previous ground truth", "first box"]
    assert rows["previous ground truth"]["centre_px"] < rows["first box"]["centre_px"]
    for row in rows.values():
        assert 0 <= row["auc"] <= 100 and row["centre_px"] >= 0
    # re-centring changes what the model sees: the two tracks differ on this random-weight model
    assert rows["re-centred"]["centre_px"] != rows["free-running"]["centre_px"]
    # the crop scale changes what the model sees too
    assert rows[scales[0]]["size_signed"] != rows[scales[1]]["size_signed"]
