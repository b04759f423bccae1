"""Result files and submissions (docs/evaluation.md#result-files)."""

from __future__ import annotations

import os
import pathlib
import stat
import zipfile

import numpy as np
import pytest

from grm_jax.evaluate import results
from grm_jax.evaluate.benchmarks import Sequence
from grm_jax.evaluate.results import (
    format_boxes,
    is_done,
    make_got10k_submission,
    make_trackingnet_submission,
    read_results,
    read_times,
    result_paths,
    write_results,
)


def test_truncation_toward_zero(tmp_path):
    boxes = [[-1.7, -0.2, 10.9, 3.0], [2.5, -3.999, 0.4, 7.9999]]
    path = write_results(tmp_path, "airplane-1", "lasot", boxes)
    assert path == str(tmp_path / "airplane-1.txt")
    # astype(int): toward zero, so -1.7 -> -1 (not floor's -2) and -0.2 -> 0.
    assert open(path).read() == "-1,0,10,3\n2,-3,0,7\n"
    np.testing.assert_array_equal(read_results(path), [[-1, 0, 10, 3], [2, -3, 0, 7]])


def test_non_finite_box_is_refused(tmp_path):
    with pytest.raises(ValueError, match="frame 1"):
        write_results(tmp_path, "s", "otb", [[1, 2, 3, 4], [np.nan, 2, 3, 4]])
    assert not os.path.exists(tmp_path / "s.txt")


@pytest.mark.parametrize("dataset,folder", [("got10k", "got10k"), ("got10k_test", "got10k"),
                                            ("trackingnet", "trackingnet")])
def test_subfolder_and_time_file(tmp_path, dataset, folder):
    path = write_results(tmp_path, "seq", dataset, [[1, 2, 3, 4], [5, 6, 7, 8]], times=[0.5, 1 / 3])
    assert path == str(tmp_path / folder / "seq.txt")
    assert open(tmp_path / folder / "seq_time.txt").read() == "0.500000\n0.333333\n"  # %f: six decimals
    np.testing.assert_allclose(read_times(tmp_path / folder / "seq_time.txt"), [0.5, 0.333333], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="need per-frame times"):
        write_results(tmp_path, "seq2", dataset, [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="1 times for 2 boxes"):
        write_results(tmp_path, "seq3", dataset, [[1, 2, 3, 4], [1, 2, 3, 4]], times=[0.1])


def test_is_done(tmp_path):
    seq = Sequence("uav_bike1", ["a.jpg"], np.zeros((1, 4)), "uav")
    assert not is_done(tmp_path, seq)
    write_results(tmp_path, seq.name, seq.dataset, [[1, 2, 3, 4]])
    assert is_done(tmp_path, seq) and is_done(tmp_path, "uav_bike1", "uav")
    # GOT-10k: the boxes file alone (no time file) is not a finished sequence.
    boxes_path, time_path = result_paths(tmp_path, "GOT-10k_Test_000001", "got10k")
    os.makedirs(os.path.dirname(boxes_path))
    open(boxes_path, "w").write("1,2,3,4\n")
    got = Sequence("GOT-10k_Test_000001", ["a.jpg"], np.zeros((1, 4)), "got10k")
    assert not is_done(tmp_path, got)
    open(time_path, "w").write("0.1\n")
    assert is_done(tmp_path, got)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = write_results(tmp_path, "s", "otb", [[1, 2, 3, 4]])

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_results(tmp_path, "s", "otb", [[9, 9, 9, 9], [9, 9, 9, 9]])
    monkeypatch.undo()
    # The previous content is intact and no temporary file is left behind.
    assert open(path).read() == "1,2,3,4\n"
    assert os.listdir(tmp_path) == ["s.txt"]


def test_read_results_tab_and_comma(tmp_path):
    (tmp_path / "tab.txt").write_text("1\t2\t3\t4\n-5\t6\t7\t8\n")
    (tmp_path / "comma.txt").write_text("1.5,2,3,4\n")
    np.testing.assert_array_equal(read_results(tmp_path / "tab.txt"), [[1, 2, 3, 4], [-5, 6, 7, 8]])
    np.testing.assert_array_equal(read_results(tmp_path / "comma.txt"), [[1.5, 2, 3, 4]])


def test_got10k_submission(tmp_path):
    for name in ("GOT-10k_Test_000002", "GOT-10k_Test_000001"):
        write_results(tmp_path, name, "got10k", [[1.9, 2, 3, 4], [-1.5, 2, 3, 4]], times=[0.1, 0.2])
    out = make_got10k_submission(tmp_path, sequences=["GOT-10k_Test_000001", "GOT-10k_Test_000002"])
    assert out["submit_zip"] == str(tmp_path / "got10k_submit.zip")
    with zipfile.ZipFile(out["submit_zip"]) as zf:
        assert zf.namelist() == [
            "GOT-10k_Test_000001/", "GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt",
            "GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt",
            "GOT-10k_Test_000002/", "GOT-10k_Test_000002/GOT-10k_Test_000002_001.txt",
            "GOT-10k_Test_000002/GOT-10k_Test_000002_time.txt"]
        assert zf.read("GOT-10k_Test_000001/GOT-10k_Test_000001_001.txt") == b"1,2,3,4\n-1,2,3,4\n"
        assert zf.read("GOT-10k_Test_000001/GOT-10k_Test_000001_time.txt") == b"0.100000\n0.200000\n"
    with zipfile.ZipFile(out["raw_zip"]) as zf:
        assert sorted(zf.namelist()) == ["GOT-10k_Test_000001.txt", "GOT-10k_Test_000001_time.txt",
                                         "GOT-10k_Test_000002.txt", "GOT-10k_Test_000002_time.txt"]
    # The raw and submission folders are kept (the official script deletes them).
    assert os.path.isdir(tmp_path / "got10k") and os.path.isdir(tmp_path / "got10k_submit")
    with pytest.raises(FileNotFoundError, match="1 sequences without results"):
        make_got10k_submission(tmp_path, sequences=["GOT-10k_Test_000003"])


def test_trackingnet_submission(tmp_path):
    for name in ("zz9", "a1_b"):
        write_results(tmp_path, name, "trackingnet", [[1, 2, 3, 4.9]], times=[0.01])
    out = make_trackingnet_submission(tmp_path)
    with zipfile.ZipFile(out["submit_zip"]) as zf:
        assert zf.namelist() == ["a1_b.txt", "zz9.txt"]
        assert zf.read("zz9.txt") == b"1,2,3,4\n"
    assert os.path.isfile(tmp_path / "trackingnet.zip")
    assert os.path.isdir(tmp_path / "trackingnet") and os.path.isdir(tmp_path / "trackingnet_submit")


def test_format_boxes_shape():
    assert format_boxes(np.array([0.99, -0.99, 1e3, 2.0])) == "0,0,1000,2\n"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_result_files_and_zips_follow_the_umask(tmp_path, umask):
    """Temporary file + rename must not keep mkstemp's 0600: results get 0666 & ~umask like any new file."""
    old = os.umask(umask)
    try:
        results.write_results(tmp_path, "GOT-10k_Test_000001", "got10k_test", np.ones((2, 4)), [0.1, 0.2])
        written = results.make_got10k_submission(tmp_path)
    finally:
        os.umask(old)
    paths = [*(tmp_path / "got10k").iterdir(), pathlib.Path(written["submit_zip"]), pathlib.Path(written["raw_zip"]),
             *pathlib.Path(written["submit_dir"]).rglob("*.txt")]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
