"""``python -m grm_jax.track`` (grm_jax/track/__main__.py) called from Python: ``main(argv)``."""

from __future__ import annotations

import numpy as np
import pytest

from grm_jax.track.__main__ import main
from grm_jax.viz import video
from helpers import OFFICIAL, config_spec

PROG = "grm-track"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Six frames of the fixture sequence as an mp4 and the first box as ``--box``."""
    refs = dict(np.load(OFFICIAL / "tracker_refs.npz"))
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with video.VideoWriter(path, fps=10) as writer:
        for frame in refs["frames"][:6]:
            writer.write(frame)
    return path, ",".join(str(v) for v in refs["init_box"])


def test_main_twice_in_one_process_with_other_flags(clip, tmp_path, capsys):
    """Two runs with different ``--max_frames`` and ``--vis_dir``: each writes what its own flags say."""
    path, box = clip
    for frames in (3, 5):
        argv = [PROG, "--config", config_spec("tiny"), "--checkpoint", str(OFFICIAL / "grm_tiny" / "state_dict.pth"),
                "--video", str(path), f"--box={box}", "--out", str(tmp_path / f"out{frames}.mp4"), "--vis_dir",
                str(tmp_path / f"vis{frames}"), f"--max_frames={frames}"]
        assert main(argv) == 0
        assert f"tracked {frames} frames" in capsys.readouterr().out
        assert len((tmp_path / f"vis{frames}" / "boxes.txt").read_text().splitlines()) == frames


def test_main_reports_bad_flags_in_one_line(clip, tmp_path, capsys):
    path, _ = clip
    assert main([PROG, "--video", str(path), "--box=1,2,3", "--out", str(tmp_path / "o.mp4")]) == 2
    assert capsys.readouterr().err.strip() == "error: --box must be x,y,w,h with w, h > 0; got 1,2,3 (see --help)"
    assert main([PROG, "--video", str(path), "--box=1,2,3,4"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()
