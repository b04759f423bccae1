"""The exported tracker (``grm_jax.export``) run by ``export_runtime`` alone against the Python tracker."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import export as grm_export
from grm_jax.data.processing import normalize_image, transform_box_to_crop
from grm_jax.track import device_crop
from grm_jax.track.tracker import BatchTracker, Tracker, TrackerParams, template_crop_box
from helpers import OFFICIAL, ROOT, config_spec

# The exported programs are the Python tracker's own device-crop functions and the runtime maps back and clips in
# float64 like it, so the boxes should be the same bit for bit (measured: 0 px, batch 1 and batch 4). Tolerance:
# the acceptance's 1e-5 px. (A separately written graph gave 2.6e-4 px: XLA's fusions round differently.)
BOX_ATOL = 1e-5
RUNNER = textwrap.dedent("""
    import sys
    for name in ("flax", "grm_jax", "cv2", "torch", "optax", "orbax", "ml_collections", "tensorflow_datasets"):
        sys.modules[name] = None  # importing any of them now raises ImportError
    for name in ("flax", "grm_jax"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable")
    artefact, frames_path, out_path = sys.argv[1:]
    sys.path.insert(0, artefact)
    import numpy as np
    from export_runtime import ExportedTracker

    data = np.load(frames_path)
    frames, box, frames4, boxes4 = data["frames"], data["init_box"], data["frames4"], data["boxes4"]
    tracker = ExportedTracker(artefact)
    tracker.initialize(frames[0], box)
    single = np.stack([tracker.track(f) for f in frames[1:]])
    score = tracker.last_outputs["score_map"]
    tracker.initialize_batch(frames4[:, 0], boxes4)
    batch = np.stack([tracker.track_batch(frames4[:, t]) for t in range(1, frames4.shape[1])])
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in
                    ("flax", "grm_jax", "cv2", "torch", "optax", "orbax", "ml_collections"))
    np.savez(out_path, single=single, batch=batch, score=score,
             loaded=np.array(loaded, dtype=str))
""")


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(OFFICIAL / "tracker_refs.npz"))


def _params(refs):
    return TrackerParams(template_factor=2.0, template_size=64, search_factor=4.0, search_size=128,
                         threshold=float(refs["threshold"]), crop="device")


def four_sequences(refs):
    """(4,T,H,W,3) frames and (4,4) initial boxes: the fixture sequence as is, mirrored left-right, upside down,
    and both (each its own track)."""
    frames, (x, y, w, h) = refs["frames"], refs["init_box"]
    height, width = frames.shape[1:3]
    frames4 = np.stack([frames, frames[:, :, ::-1], frames[:, ::-1], frames[:, ::-1, ::-1]])
    boxes4 = np.array([[x, y, w, h], [width - x - w, y, w, h], [x, height - y - h, w, h],
                       [width - x - w, height - y - h, w, h]], np.float32)
    return np.ascontiguousarray(frames4), boxes4


@pytest.fixture(scope="module")
def python_boxes(tiny_model_and_variables, refs):
    """Boxes and last score map of the Python tracker with the device crop on the reference sequence."""
    model, variables = tiny_model_and_variables
    tracker = Tracker(model, variables, _params(refs))
    tracker.initialize(refs["frames"][0], refs["init_box"])
    boxes = np.stack([tracker.track(f) for f in refs["frames"][1:]])
    return boxes, tracker.last_outputs["score_map"][..., 0]


@pytest.fixture(scope="module")
def python_boxes4(tiny_model_and_variables, refs):
    """The Python BatchTracker (device crop, 4 slots) on :func:`four_sequences`: (T−1, 4, 4) boxes."""
    model, variables = tiny_model_and_variables
    frames4, boxes4 = four_sequences(refs)
    tracker = BatchTracker(model, variables, _params(refs), batch_size=4)
    for slot in range(4):
        tracker.initialize(slot, frames4[slot, 0], boxes4[slot])
    return np.stack([tracker.track(list(frames4[:, t]))[0] for t in range(1, frames4.shape[1])])


def test_exported_tracker_runs_without_flax_and_matches_python(tmp_path, tiny_model_and_variables, refs,
                                                              python_boxes, python_boxes4):
    model, variables = tiny_model_and_variables
    artefact = grm_export.save_artefact(tmp_path / "art", model, variables, _params(refs))
    assert sorted(p.name for p in artefact.iterdir()) == sorted(grm_export.FILES)
    meta = json.loads((artefact / "meta.json").read_text())
    assert meta["platforms"] == ["cpu", "cuda"] and meta["frame_size"] is None
    frames4, boxes4 = four_sequences(refs)
    np.savez(tmp_path / "frames.npz", frames=refs["frames"], init_box=refs["init_box"], frames4=frames4,
             boxes4=boxes4)
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # run from tmp_path: the repository is not on the path either
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(artefact), str(tmp_path / "frames.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    assert out["loaded"].size == 0, out["loaded"]
    boxes, score = python_boxes
    steps = len(refs["frames"]) - 1  # every frame after the first
    assert out["single"].shape == (steps, 4) and out["batch"].shape == (steps, 4, 4)
    np.testing.assert_allclose(out["single"], boxes, rtol=0, atol=BOX_ATOL)
    np.testing.assert_allclose(out["batch"], python_boxes4, rtol=0, atol=BOX_ATOL)
    # The four tracks are really different (mirrored sequences), and each moves away from its first box.
    assert np.abs(np.diff(python_boxes4, axis=1)).max() > 10
    assert np.abs(python_boxes4[-1] - boxes4).max() > 5
    np.testing.assert_array_equal(out["score"][0], score)  # the same program: the same score map


def test_template_pieces(refs):
    """The device initialisation's float32 crop box and table normalisation against the host's."""
    box, rf0 = refs["init_box"], float(refs["template_resize_factor"])
    crop_box = template_crop_box(jnp.asarray(box[None], jnp.float32), jnp.float32([rf0]), 64)
    np.testing.assert_allclose(np.asarray(crop_box)[0], transform_box_to_crop(box, box, rf0, 64), atol=1e-6)
    crop = refs["template_crop"][None].astype(np.float32)
    np.testing.assert_array_equal(np.asarray(device_crop.normalize_exact(jnp.asarray(crop)))[0],
                                  normalize_image(refs["template_crop"]))  # bit-exact by construction


def test_export_cli_fixed_frame_size(tmp_path, refs, python_boxes):
    """``python -m grm_jax.export`` on the official ``.pth`` with a fixed frame size, CPU only; loaded in process."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "grm_jax.export", "--config", "configs/grm.py:tiny",
                           "--checkpoint", str(OFFICIAL / "grm_tiny" / "state_dict.pth"), "--output",
                           str(tmp_path / "art"), "--frame_size", "240,320", "--platforms", "cpu",
                           "--threshold", str(float(refs["threshold"]))], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "exported tracker (cpu; batch symbolic, frame 240x320)" in proc.stdout
    meta = json.loads((tmp_path / "art" / "meta.json").read_text())
    assert meta["frame_size"] == [240, 320] and meta["platforms"] == ["cpu"]
    from grm_jax.export_runtime import ExportedTracker

    tracker = ExportedTracker(tmp_path / "art")
    tracker.initialize(refs["frames"][0], refs["init_box"])
    boxes = np.stack([tracker.track(f) for f in refs["frames"][1:6]])
    np.testing.assert_allclose(boxes, python_boxes[0][:5], rtol=0, atol=BOX_ATOL)
    with pytest.raises(ValueError, match="1 frames for 2"):
        tracker.initialize_batch(np.stack([refs["frames"][0]] * 2), np.stack([refs["init_box"]] * 2))
        tracker.track_batch(refs["frames"][1:2])
    assert pathlib.Path(tmp_path / "art" / "export_runtime.py").read_text() == \
        (ROOT / "grm_jax" / "export_runtime.py").read_text()


def test_export_main_twice_in_one_process(tmp_path, capsys):
    """``grm_jax.export.main(argv)`` from Python, twice with other flags: each artefact has its own frame size."""
    for frame_size in ("240,320", "120,160"):
        argv = ["grm-export", "--config", config_spec("tiny"), "--checkpoint", str(OFFICIAL / "grm_tiny" /
                "state_dict.pth"), "--output", str(tmp_path / frame_size), "--frame_size", frame_size,
                "--platforms", "cpu"]
        assert grm_export.main(argv) == 0
        assert f"frame {frame_size.replace(',', 'x')})" in capsys.readouterr().out
        meta = json.loads((tmp_path / frame_size / "meta.json").read_text())
        assert meta["frame_size"] == [int(v) for v in frame_size.split(",")]
    assert grm_export.main(["grm-export", "--checkpoint", str(tmp_path / "none"), "--output", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: no checkpoint in {tmp_path / 'none'}")


def test_export_refuses_a_damped_size_update():
    with pytest.raises(ValueError, match="size_update"):
        grm_export.export_tracker(None, {}, TrackerParams(size_update=0.5))
