"""Track one target through any video OpenCV reads and write the overlay video.

  python -m grm_jax.track --video clip.mp4 --box 120,80,40,60 --out tracked.mp4
  python -m grm_jax.track --video 'frames/%05d.jpg' --box 120,80,40,60 --out tracked.mp4 --vis_dir vis/ \
      --config configs/grm.py:B/256 --checkpoint ckpt/grm

``--box`` is the target in the first frame, x,y,w,h pixels; it must overlap the frame. Frames are read with
``cv2.VideoCapture`` (a video file, an image-sequence pattern, a camera index) and converted BGR → RGB. The output
video (mp4v) shows the tracked box and the per-layer interaction-ratio chart
(:func:`grm_jax.viz.video.overlay_frame`); it is written to a hidden temporary file that replaces ``--out`` only
when tracking ends normally, and ``--out`` may not be the input. ``--vis_dir`` adds the token-division grids every
``--vis_every`` frames and ``boxes.txt`` (x,y,w,h per frame, written as the frames go). ``--checkpoint`` is loaded
as ``eval.py`` does (Orbax directory, training workdir or official ``.pth``).
"""

from __future__ import annotations

import itertools
import pathlib
import sys
import time

import cv2
import numpy as np
from absl import app, flags

from grm_jax import cli
from grm_jax.checkpoints import load_checkpoint_variables
from grm_jax.config import check_threshold, validate
from grm_jax.models import build_model
from grm_jax.track.tracker import Tracker, TrackerParams
from grm_jax.viz.tokens import save_png, tracker_token_grid
from grm_jax.viz.video import VideoWriter, overlay_frame

DEFAULT_CONFIG = "configs/grm_tiny_synthetic.py"  # relative to the repository root


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides ``--config`` (and its overrides) and ``--verbosity``."""
    flags.DEFINE_string("checkpoint", "runs/demo", "Orbax checkpoint / training workdir / official .pth",
                        flag_values=fv)
    flags.DEFINE_string("video", None, "input video (anything cv2.VideoCapture opens)", required=True,
                        flag_values=fv)
    flags.DEFINE_list("box", None, "initial box x,y,w,h in pixels of the first frame", required=True, flag_values=fv)
    flags.DEFINE_string("out", None, "output overlay video (.mp4)", required=True, flag_values=fv)
    flags.DEFINE_string("vis_dir", None, "folder for token-division grids and boxes.txt", flag_values=fv)
    flags.DEFINE_integer("vis_every", 10, "token grid every N frames", flag_values=fv)
    flags.DEFINE_enum("crop", "host", ["host", "device"], "crop path", flag_values=fv)
    flags.DEFINE_float("threshold", None, "division threshold (default: config TEST.HYPER.DEFAULT)", flag_values=fv)
    flags.DEFINE_integer("max_frames", None, "stop after this many frames", flag_values=fv)


def read_frames(path: str, max_frames: int | None = None):
    """Yield (H,W,3) uint8 RGB frames of ``path`` read with OpenCV (at most ``max_frames``); also its fps."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise FileNotFoundError(f"OpenCV cannot open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0

    def frames():
        count = 0
        try:
            while max_frames is None or count < max_frames:
                ok, frame = capture.read()
                if not ok:
                    return
                count += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    return frames(), fps


def parse_box(values) -> np.ndarray:
    """``--box`` as four finite numbers x,y,w,h with w, h > 0 (a usage error otherwise)."""
    try:
        box = np.asarray([float(v) for v in values], np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
        raise app.UsageError(f"--box must be x,y,w,h with w, h > 0; got {','.join(values)}")
    return box


def check_box_in_frame(box: np.ndarray, frame: np.ndarray) -> None:
    """The box must overlap the first frame (a usage error names both)."""
    height, width = frame.shape[:2]
    x, y, w, h = box
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise app.UsageError(f"--box {x:g},{y:g},{w:g},{h:g} lies outside the first frame ({width}x{height})")


def check_output(out: str, video: str) -> None:
    """Refuse an output that is the input video."""
    out_path, video_path = pathlib.Path(out), pathlib.Path(video)
    same = out_path.resolve() == video_path.resolve()
    if not same and out_path.exists() and video_path.exists():
        same = out_path.samefile(video_path)
    if same:
        raise app.UsageError(f"--out {out} is the input video; choose another file")


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Tracks the video as the flags say and writes the overlay."""
    cli.no_arguments(args)
    config = fv.config
    validate(config)
    if fv.threshold is not None:
        check_threshold(fv.threshold, "--threshold")
    box = parse_box(fv.box)
    check_output(fv.out, fv.video)
    frames, fps = read_frames(fv.video, fv.max_frames)
    first = next(frames, None)
    if first is None:
        raise app.UsageError(f"--video {fv.video}: no frame could be read (not a video OpenCV can decode?)")
    check_box_in_frame(box, first)
    checkpoint = pathlib.Path(fv.checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: run `make demo` to train the default one, or pass "
                                f"--checkpoint (an Orbax directory, a training workdir or an official .pth)")
    variables = load_checkpoint_variables(checkpoint, config, cli.config_given(fv))
    params = TrackerParams.from_config(config, "DEFAULT", crop=fv.crop, threshold=fv.threshold)
    tracker = Tracker(build_model(config), variables, params)
    vis_dir = pathlib.Path(fv.vis_dir) if fv.vis_dir else None
    boxes_file = None
    if vis_dir is not None:
        vis_dir.mkdir(parents=True, exist_ok=True)
        boxes_file = open(vis_dir / "boxes.txt", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    count, start = 0, time.perf_counter()
    try:
        with VideoWriter(fv.out, fps) as writer:
            for t, frame in enumerate(itertools.chain([first], frames)):
                if t == 0:
                    tracker.initialize(frame, box)
                    outputs = {}
                else:
                    box = tracker.track(frame)
                    outputs = tracker.last_outputs
                count += 1
                if boxes_file is not None:  # as the frames go: a stopped run keeps the boxes it tracked
                    boxes_file.write(",".join(f"{v:.4f}" for v in np.asarray(box, np.float64)) + "\n")
                    boxes_file.flush()
                writer.write(overlay_frame(frame, box, None, outputs.get("interaction_ratio"), f"#{t}"))
                if vis_dir is not None and t > 0 and fv.vis_every > 0 and t % fv.vis_every == 0:
                    save_png(vis_dir / f"tokens_{t:05d}.png", tracker_token_grid(outputs, config.model.patch_size))
    finally:
        if boxes_file is not None:
            boxes_file.close()
    elapsed = time.perf_counter() - start
    print(f"tracked {count} frames ({count / elapsed:.1f} frames/s incl. compilation) → {fv.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.track [flags]`` or ``grm-track [flags]`` (``argv`` like ``sys.argv``; ``None``:
    ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__, config=DEFAULT_CONFIG, verbosity=True)


if __name__ == "__main__":
    sys.exit(main())
