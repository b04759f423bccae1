"""Overlay frames and videos (``grm_jax.viz.video``), the tracker's per-frame hook and ``evaluate(on_frame=...)``."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from grm_jax.evaluate.run import evaluate
from grm_jax.track.tracker import BatchTracker, Tracker, TrackerParams, track_sequences
from grm_jax.viz import tokens, video
from helpers import OFFICIAL, ROOT, load_config


@pytest.fixture(scope="module")
def refs():
    return dict(np.load(OFFICIAL / "tracker_refs.npz"))


def _even(shape) -> tuple[int, int]:
    """The (h, w) an mp4v video of frames of ``shape`` (T, H, W, 3) decodes to: odd sizes padded by one."""
    return shape[1] + shape[1] % 2, shape[2] + shape[2] % 2


def _frame_count(path) -> tuple[int, tuple]:
    """Frames decoded from ``path`` by OpenCV and the (h, w) of the first."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, size or frame.shape[:2]
    capture.release()
    return count, size


def test_box_iou_xywh():
    assert video.box_iou_xywh([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert video.box_iou_xywh([0, 0, 10, 10], [20, 0, 10, 10]) == 0.0
    assert video.box_iou_xywh([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150, abs=1e-15)
    assert np.isnan(video.box_iou_xywh([0, 0, 10, 10], [np.nan, 0, 1, 1]))
    assert np.isnan(video.box_iou_xywh([0, 0, 0, 10], [0, 0, 10, 10]))


def test_ratio_chart_bar_heights():
    ratios = [0.25, 1.0, 0.0, 0.5]
    chart = video.ratio_chart(ratios)
    assert chart.shape == (*video.CHART_SIZE, 3)
    bars = np.all(chart == video.BAR_COLOUR, axis=-1)
    base = video.CHART_SIZE[0] - 14
    width = (video.CHART_SIZE[1] - 4) / len(ratios)
    for i, r in enumerate(ratios):
        column = bars[:, int(2 + (i + 0.5) * width)]  # the middle column of bar i
        assert column.sum() == round(r * (base - 2)), (i, column.sum())
        if r:
            assert column[base - 1] and not column[base]  # bars stand on the base line


def test_overlay_frame_draws_both_boxes_text_and_chart(refs):
    frame = refs["frames"][3]
    gt, box = refs["gt"][3], refs["gt"][3] + [6, 4, 0, 0]
    ratios = np.array([0.5, 0.25, 1.0])
    out = video.overlay_frame(frame, box, gt, ratios, "#3")
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(frame, refs["frames"][3])  # the input is left alone
    x, y = int(round(box[0])), int(round(box[1]))
    assert tuple(out[y + 20, x]) == video.PRED_COLOUR  # left edge of the tracked box
    gx, gy = int(round(gt[0])), int(round(gt[1]))
    assert tuple(out[gy + 20, gx]) == video.GT_COLOUR
    chart = video.ratio_chart(ratios, video.chart_size(frame.shape))
    h, w = chart.shape[:2]
    assert video.chart_size((240, 320)) == (40, 80)  # a quarter of a 320 px width, half that high (≥ 40)
    np.testing.assert_array_equal(out[4:4 + h, frame.shape[1] - 4 - w:frame.shape[1] - 4], chart)
    assert np.any(out[5:20, 6:120] != video.overlay_frame(frame, box, gt, ratios, "")[5:20, 6:120])  # text


@pytest.mark.parametrize("size", [(240, 320), (121, 161)])
def test_video_writer_frame_count_and_size(tmp_path, refs, size):
    """mp4v needs even sizes: an odd frame is padded by one black row / column."""
    path = tmp_path / "clip.mp4"
    with video.VideoWriter(path, fps=10) as writer:
        for frame in refs["frames"][:12]:
            writer.write(frame[:size[0], :size[1]])
    assert writer.count == 12
    assert _frame_count(path) == (12, (size[0] + size[0] % 2, size[1] + size[1] % 2))


def test_recorder_on_the_tracker_hook(tmp_path, tiny_model_and_variables, refs):
    """Two sequences in two slots: every frame reaches the hook in order, once; one overlay video per sequence
    with all its frames, token grids at t = 5, 10 of the longer one."""
    model, variables = tiny_model_and_variables
    params = TrackerParams(template_factor=2.0, template_size=64, search_factor=4.0, search_size=128,
                           threshold=float(refs["threshold"]))
    frames, gt = refs["frames"], refs["gt"]
    seqs = [types.SimpleNamespace(name="long", frames=frames[:12], gt=gt[:12]),
            types.SimpleNamespace(name="short", frames=frames[20:27], gt=gt[20:27])]
    recorder = video.OverlayRecorder(tmp_path, model.config.patch_size, every=5)
    seen = []

    def hook(index, t, frame, box, outputs):
        seen.append((index, t))
        recorder(seqs[index], t, frame, box, outputs)

    results = track_sequences(BatchTracker(model, variables, params, batch_size=2),
                              [(s.frames, s.gt[0]) for s in seqs], on_frame=hook)
    assert sorted(seen) == [(0, t) for t in range(12)] + [(1, t) for t in range(7)]
    assert [t for i, t in seen if i == 0] == list(range(12))
    assert recorder.writers == {}  # closed after each sequence's last frame
    assert _frame_count(tmp_path / "long.mp4") == (12, _even(frames.shape))
    assert _frame_count(tmp_path / "short.mp4") == (7, _even(frames.shape))
    assert sorted(p.name for p in (tmp_path / "long").iterdir()) == ["tokens_00005.png", "tokens_00010.png"]
    grid = cv2.imread(str(tmp_path / "long" / "tokens_00010.png"))
    assert grid.shape == (tokens.PAD + tokens.HEADER + 256 + tokens.PAD, tokens.PAD + 6 * 260, 3)
    assert results[0].boxes.shape == (12, 4)


def _otb(root, refs, name, start, count):
    folder = root / name / "img"
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i + 1:04d}.jpg"), cv2.cvtColor(refs["frames"][start + i], cv2.COLOR_RGB2BGR))
    np.savetxt(root / name / "groundtruth_rect.txt", refs["gt"][start:start + count], fmt="%.2f", delimiter=",")


def test_evaluate_calls_the_hook_for_the_chosen_sequences(tmp_path, tiny_model_and_variables, refs):
    """``evaluate(on_frame=, on_frame_sequences=)``: only the named sequence is recorded; on a rerun it is tracked
    again (same result file) while the other, finished one is skipped."""
    _, variables = tiny_model_and_variables
    config = load_config("tiny")
    root = tmp_path / "otb"
    _otb(root, refs, "Alpha", 0, 11)
    _otb(root, refs, "Beta", 20, 5)
    results = tmp_path / "results"
    recorder = video.OverlayRecorder(tmp_path / "vis", config.model.patch_size, every=5)
    out = evaluate(config, variables, "otb", str(root), results, batch_size=2, on_frame=recorder,
                   on_frame_sequences=["otb_Alpha"], progress=False)
    assert "scores" in out
    assert _frame_count(tmp_path / "vis" / "otb_Alpha.mp4") == (11, (240, 320))
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["otb_Alpha", "otb_Alpha.mp4"]
    assert sorted(os.listdir(tmp_path / "vis" / "otb_Alpha")) == ["tokens_00005.png", "tokens_00010.png"]
    first = (results / "otb_Alpha.txt").read_text()
    beta_mtime = os.stat(results / "otb_Beta.txt").st_mtime_ns
    again = video.OverlayRecorder(tmp_path / "vis2", config.model.patch_size, every=5)
    evaluate(config, variables, "otb", str(root), results, batch_size=2, on_frame=again,
             on_frame_sequences=["otb_Alpha"], progress=False)
    assert _frame_count(tmp_path / "vis2" / "otb_Alpha.mp4") == (11, (240, 320))
    assert (results / "otb_Alpha.txt").read_text() == first
    assert os.stat(results / "otb_Beta.txt").st_mtime_ns == beta_mtime  # not tracked again


def test_track_cli_on_a_video_file(tmp_path, tiny_model_and_variables, refs):
    """``python -m grm_jax.track``: overlay video with every frame, boxes.txt equal to the Python tracker's on the
    same decoded frames, token grids every --vis_every frames."""
    clip = tmp_path / "clip.mp4"
    with video.VideoWriter(clip, fps=10) as writer:
        for frame in refs["frames"][:11]:
            writer.write(frame)
    box = ",".join(str(v) for v in refs["init_box"])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "grm_jax.track", "--video", str(clip), f"--box={box}",
                           "--out", str(tmp_path / "out.mp4"), "--config", "configs/grm.py:tiny", "--checkpoint",
                           str(OFFICIAL / "grm_tiny" / "state_dict.pth"), "--vis_dir", str(tmp_path / "vis"),
                           "--vis_every", "5", f"--threshold={float(refs['threshold'])}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "tracked 11 frames" in proc.stdout
    assert _frame_count(tmp_path / "out.mp4") == (11, _even(refs["frames"].shape))
    assert sorted(os.listdir(tmp_path / "vis")) == ["boxes.txt", "tokens_00005.png", "tokens_00010.png"]
    boxes = np.loadtxt(tmp_path / "vis" / "boxes.txt", delimiter=",")
    capture = cv2.VideoCapture(str(clip))  # the frames the CLI saw: the decoded (lossy) video
    decoded = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(11)]
    capture.release()
    model, variables = tiny_model_and_variables
    tracker = Tracker(model, variables, TrackerParams(template_factor=2.0, template_size=64, search_factor=4.0,
                                                      search_size=128, threshold=float(refs["threshold"])))
    tracker.initialize(decoded[0], refs["init_box"])
    expected = np.stack([refs["init_box"]] + [tracker.track(f) for f in decoded[1:]])
    np.testing.assert_allclose(boxes, expected, rtol=0, atol=5e-5 + 1e-9)  # boxes.txt keeps 4 decimals


def test_video_writer_replaces_the_file_only_when_complete(tmp_path, refs):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous video")
    with pytest.raises(RuntimeError, match="stopped"):
        with video.VideoWriter(out, fps=10) as writer:
            writer.write(refs["frames"][0])
            raise RuntimeError("stopped")
    assert out.read_bytes() == b"previous video" and os.listdir(tmp_path) == ["out.mp4"]
    with video.VideoWriter(out, fps=10) as writer:
        for frame in refs["frames"][:3]:
            writer.write(frame)
    assert _frame_count(out)[0] == 3 and os.listdir(tmp_path) == ["out.mp4"]


def _track_cli(tmp_path, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "grm_jax.track", "--config", "configs/grm.py:tiny", "--checkpoint",
                           str(OFFICIAL / "grm_tiny" / "state_dict.pth"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_track_cli_refuses_bad_input_in_one_line_and_destroys_nothing(tmp_path, refs):
    clip = tmp_path / "clip.mp4"
    with video.VideoWriter(clip, fps=10) as writer:
        for frame in refs["frames"][:4]:
            writer.write(frame)
    before = clip.read_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    cases = [
        (["--video", str(clip), "--box=10,10,20,20", "--out", str(clip)], "is the input video"),
        (["--video", str(clip), "--box=400,10,20,20", "--out", str(tmp_path / "o.mp4")], "outside the first frame"),
        (["--video", str(clip), "--box=a,b,c,d", "--out", str(tmp_path / "o.mp4")], "--box must be x,y,w,h"),
        (["--video", str(text), "--box=10,10,20,20", "--out", str(tmp_path / "o.mp4")], "notes.txt"),
        (["--video", str(clip), "--box=10,10,20,20", "--out", str(tmp_path / "o.mp4"), "--checkpoint",
          str(tmp_path / "none")], "run `make demo`"),
    ]
    for args, message in cases:
        proc = _track_cli(tmp_path, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
        assert message in lines[0], (args, lines)
    assert clip.read_bytes() == before
    assert not (tmp_path / "o.mp4").exists()


def test_evaluate_skips_a_sequence_with_an_empty_first_box(tmp_path, tiny_model_and_variables, refs):
    """A zero-size first box does not stop the run: the other sequences are tracked and scored, the bad one is
    named with its annotation file."""
    _, variables = tiny_model_and_variables
    config = load_config("tiny")
    root = tmp_path / "otb"
    _otb(root, refs, "Alpha", 0, 6)
    _otb(root, refs, "Beta", 20, 5)
    gt_file = root / "Beta" / "groundtruth_rect.txt"
    lines = gt_file.read_text().splitlines()
    gt_file.write_text("\n".join(["50.00,60.00,0.00,0.00"] + lines[1:]) + "\n")
    out = evaluate(config, variables, "otb", str(root), tmp_path / "results", batch_size=2, progress=False)
    assert "scores" in out and (tmp_path / "results" / "otb_Alpha.txt").is_file()
    assert not (tmp_path / "results" / "otb_Beta.txt").exists()
    (problem,) = out["rejected"]
    assert problem.startswith("otb_Beta: first box [50.0, 60.0, 0.0, 0.0]") and str(gt_file) in problem
