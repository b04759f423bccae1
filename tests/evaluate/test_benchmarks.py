"""Benchmark loaders (docs/evaluation.md#benchmarks) on tiny fake folders in each benchmark's layout."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from grm_jax.evaluate.benchmarks import (
    BENCHMARKS,
    BenchmarkFormatError,
    load_benchmark,
    parse_uav_config,
    read_boxes,
)


def _write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _jpg(path):
    """A real 4x6 JPEG (the loaders never decode it; a few tests check it stays untouched)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((4, 6, 3), 128, np.uint8))


def _rows(boxes, sep=","):
    return "".join(sep.join(str(v) for v in box) + "\n" for box in boxes)


def _names(sequences):
    return [s.name for s in sequences]


# ---------------------------------------------------------------------------------------------------------- LaSOT


def _lasot_video(root, name, boxes, occlusion=None, out_of_view=None):
    cls = name.rsplit("-", 1)[0]
    folder = os.path.join(root, cls, name)
    _write(os.path.join(folder, "groundtruth.txt"), _rows(boxes))
    n = len(boxes)
    _write(os.path.join(folder, "full_occlusion.txt"), ",".join(str(v) for v in (occlusion or [0] * n)))
    _write(os.path.join(folder, "out_of_view.txt"), ",".join(str(v) for v in (out_of_view or [0] * n)))
    for i in range(1, n + 1):
        _write(os.path.join(folder, "img", f"{i:08d}.jpg"))
    return folder


@pytest.fixture
def lasot_root(tmp_path):
    root = str(tmp_path / "lasot")
    _lasot_video(root, "airplane-1", [[1, 2, 30, 40], [2.5, 3, 31, 41], [3, 4, 32, 42]],
                 occlusion=[0, 1, 0], out_of_view=[0, 0, 1])
    _lasot_video(root, "airplane-10", [[5, 5, 10, 10], [6, 6, 10, 10]])
    _lasot_video(root, "airplane-2", [[7, 7, 20, 20], [8, 8, 20, 20]])
    _lasot_video(root, "atv-1", [[1, 1, 5, 5], [1, 1, 5, 5]])  # an extension class in the same root
    return root


def test_lasot_from_folders(lasot_root):
    sequences = load_benchmark("lasot", lasot_root)
    # Numeric order inside a class (2 before 10), extension classes excluded.
    assert _names(sequences) == ["airplane-1", "airplane-2", "airplane-10"]
    seq = sequences[0]
    assert seq.dataset == "lasot"
    assert seq.gt.dtype == np.float64 and seq.gt.shape == (3, 4)
    np.testing.assert_array_equal(seq.gt[1], [2.5, 3, 31, 41])  # exact: parsed decimal literals
    np.testing.assert_array_equal(seq.init_box, [1, 2, 30, 40])
    # visible = full_occlusion == 0 & out_of_view == 0
    assert seq.visible.tolist() == [True, False, False]
    assert seq.frames == [os.path.join(lasot_root, "airplane", "airplane-1", "img", f"{i:08d}.jpg") for i in (1, 2, 3)]


def test_lasot_testing_set_and_extension(lasot_root):
    _write(os.path.join(lasot_root, "testing_set.txt"), "airplane-2\n\nairplane-1\n")
    assert _names(load_benchmark("lasot", lasot_root)) == ["airplane-2", "airplane-1"]
    ext = load_benchmark("lasot_ext", lasot_root)
    assert _names(ext) == ["atv-1"] and ext[0].dataset == "lasot" and ext[0].visible.all()


def test_lasot_flag_length_mismatch(lasot_root):
    path = os.path.join(lasot_root, "airplane", "airplane-2", "out_of_view.txt")
    _write(path, "0,0,0")
    with pytest.raises(BenchmarkFormatError, match="out_of_view.txt: 3 flags for 2"):
        load_benchmark("lasot", lasot_root, sequence_list=["airplane-2"])


def test_missing_frame_names_the_file(lasot_root):
    missing = os.path.join(lasot_root, "airplane", "airplane-10", "img", "00000002.jpg")
    os.remove(missing)
    with pytest.raises(BenchmarkFormatError) as info:
        load_benchmark("lasot", lasot_root)
    assert missing in str(info.value) and "frame 2 of 2" in str(info.value) and "airplane-10" in str(info.value)
    # Without the check the sequence loads with the path of the absent file.
    sequences = load_benchmark("lasot", lasot_root, check_frames=False)
    assert missing in sequences[2].frames


def test_malformed_line_names_file_and_line(lasot_root):
    path = os.path.join(lasot_root, "airplane", "airplane-1", "groundtruth.txt")
    _write(path, "1,2,30,40\n2,3,31,41\n3,4,x,42\n")
    with pytest.raises(BenchmarkFormatError) as info:
        load_benchmark("lasot", lasot_root)
    assert f"{path}: line 3:" in str(info.value)
    _write(path, "1,2,30,40\n2,3,31\n3,4,32,42\n")
    with pytest.raises(BenchmarkFormatError, match="line 2: expected 4 values"):
        load_benchmark("lasot", lasot_root)
    _write(path, "1,2,30,40\nNaN,NaN,NaN,NaN\n3,4,32,42\n")
    with pytest.raises(BenchmarkFormatError, match="line 2: non-finite"):  # NaN is allowed for UAV123 only
        load_benchmark("lasot", lasot_root)


def test_missing_annotation_names_the_file(lasot_root):
    with pytest.raises(BenchmarkFormatError, match="airplane-7.*groundtruth.txt: annotation file not found"):
        load_benchmark("lasot", lasot_root, sequence_list=["airplane-7"])


# -------------------------------------------------------------------------------------------- GOT-10k, TrackingNet


@pytest.mark.parametrize("split", ["test", "val"])
def test_got10k(tmp_path, split):
    root = str(tmp_path / "got10k")
    names = [f"GOT-10k_{split}_000002", f"GOT-10k_{split}_000001"]
    _write(os.path.join(root, split, "list.txt"), "\n".join(names) + "\n")
    for name in names:
        _write(os.path.join(root, split, name, "groundtruth.txt"), "10,20,30,40\n" if split == "test" else
               "10,20,30,40\n11,21,30,40\n12,22,30,40\n")
        for frame in ("2.jpg", "10.jpg", "1.jpg"):
            _jpg(os.path.join(root, split, name, frame))
        _write(os.path.join(root, split, name, "meta_info.ini"), "x")  # non-jpg files are ignored
    sequences = load_benchmark(f"got10k_{split}", root)
    assert _names(sequences) == names  # list.txt order
    seq = sequences[0]
    assert seq.dataset == "got10k" and seq.visible is None
    assert [os.path.basename(f) for f in seq.frames] == ["1.jpg", "2.jpg", "10.jpg"]  # integer, not lexicographic
    assert seq.gt.shape == ((1, 4) if split == "test" else (3, 4))


def test_trackingnet(tmp_path):
    root = str(tmp_path / "trackingnet")
    for name in ("b_seq", "a_seq"):
        _write(os.path.join(root, "TEST", "anno", f"{name}.txt"), "1.5,2,3,4\n")
        for i in (0, 1, 2, 11):
            _write(os.path.join(root, "TEST", "frames", name, f"{i}.jpg"))
    sequences = load_benchmark("trackingnet", root)
    assert _names(sequences) == ["a_seq", "b_seq"]
    assert sequences[0].dataset == "trackingnet"
    assert [os.path.basename(f) for f in sequences[0].frames] == ["0.jpg", "1.jpg", "2.jpg", "11.jpg"]
    np.testing.assert_array_equal(sequences[0].gt, [[1.5, 2, 3, 4]])


def test_trackingnet_bad_frame_name(tmp_path):
    root = str(tmp_path / "trackingnet")
    _write(os.path.join(root, "TEST", "anno", "s.txt"), "1,2,3,4\n")
    _write(os.path.join(root, "TEST", "frames", "s", "0.jpg"))
    _write(os.path.join(root, "TEST", "frames", "s", "thumb.jpg"))
    with pytest.raises(BenchmarkFormatError, match="thumb.jpg: frame name is not an integer"):
        load_benchmark("trackingnet", root)


# ------------------------------------------------------------------------------------------------------- UAV123


@pytest.fixture
def uav_root(tmp_path):
    root = str(tmp_path / "uav")
    _write(os.path.join(root, "anno", "UAV123", "bike1.txt"), "1,2,3,4\nNaN,NaN,NaN,NaN\n3,4,5,6\n")
    _write(os.path.join(root, "anno", "UAV123", "bird1_2.txt"), "5,5,9,9\n6,6,9,9\n")
    for i in (1, 2, 3):
        _write(os.path.join(root, "data_seq", "UAV123", "bike1", f"{i:06d}.jpg"))
    for i in (775, 776):
        _write(os.path.join(root, "data_seq", "UAV123", "bird1", f"{i:06d}.jpg"))
    return root


def test_uav(uav_root):
    sequences = load_benchmark("uav", uav_root)
    assert _names(sequences) == ["uav_bike1", "uav_bird1_2"]
    bike, bird = sequences
    assert bike.dataset == "uav"
    assert np.isnan(bike.gt[1]).all() and not np.isnan(bike.gt[[0, 2]]).any()  # NaN rows allowed for uav
    # bird1_2 starts at frame 775 of the bird1 video (UAV123 sub-sequence table); end = start + #rows - 1.
    assert bird.frames == [os.path.join(uav_root, "data_seq", "UAV123", "bird1", f"{i:06d}.jpg") for i in (775, 776)]
    # Names with or without the result-file prefix select the same sequence.
    assert _names(load_benchmark("uav", uav_root, sequence_list=["bird1_2", "uav_bike1"])) == ["uav_bird1_2",
                                                                                                "uav_bike1"]


def test_uav_user_config(uav_root, tmp_path):
    _write(os.path.join(uav_root, "anno", "UAV123", "newvid_2.txt"), "1,1,2,2\n")
    _write(os.path.join(uav_root, "data_seq", "UAV123", "newvid", "000040.jpg"))
    with pytest.raises(BenchmarkFormatError, match="no start frame known for sub-sequence 'newvid_2'"):
        load_benchmark("uav", uav_root)
    config = tmp_path / "configSeqs.m"
    config.write_text("seqs={struct('name','newvid_2','path','D:\\data_seq\\UAV123\\newvid\\','startFrame',40,"
                      "'endFrame',40,'nz',6,'ext','jpg','init_rect',[0,0,0,0]),...\n};\n")
    assert parse_uav_config(config.read_text()) == {"newvid_2": ("newvid", 40)}
    seq = load_benchmark("uav", uav_root, uav_config=str(config), sequence_list=["newvid_2"])[0]
    assert seq.frames == [os.path.join(uav_root, "data_seq", "UAV123", "newvid", "000040.jpg")]
    seq = load_benchmark("uav", uav_root, uav_config={"newvid_2": 40}, sequence_list=["newvid_2"])[0]
    assert seq.name == "uav_newvid_2" and os.path.basename(seq.frames[0]) == "000040.jpg"


# ---------------------------------------------------------------------------------------------------------- NfS


def test_nfs_tab_separated(tmp_path):
    root = str(tmp_path / "nfs")
    _write(os.path.join(root, "anno", "nfs_bee.txt"), _rows([[1, 2, 3, 4], [2, 3, 4, 5]], "\t"))
    _write(os.path.join(root, "anno", "nfs_Gymnastics.txt"), _rows([[9, 9, 9, 9]], "\t"))
    _write(os.path.join(root, "anno", "README.txt"), "not an annotation")
    for i in (1, 2):
        _write(os.path.join(root, "sequences", "bee", f"{i:05d}.jpg"))
    _write(os.path.join(root, "sequences", "Gymnastics", "00001.jpg"))
    sequences = load_benchmark("nfs", root)
    assert _names(sequences) == ["nfs_Gymnastics", "nfs_bee"]
    assert sequences[1].dataset == "nfs" and sequences[1].gt.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5]]
    assert sequences[1].frames[-1] == os.path.join(root, "sequences", "bee", "00002.jpg")
    # A comma-separated NfS file is malformed for this loader (tab only).
    _write(os.path.join(root, "anno", "nfs_bee.txt"), "1,2,3,4\n")
    with pytest.raises(BenchmarkFormatError, match=r"nfs_bee.txt: line 1: expected 4 values separated by '\\t'"):
        load_benchmark("nfs", root, sequence_list=["nfs_bee"])


# ---------------------------------------------------------------------------------------------------------- OTB


def _otb_video(root, video, files, frames, width=4):
    for name, text in files.items():
        _write(os.path.join(root, video, name), text)
    for i in frames:
        _write(os.path.join(root, video, "img", f"{i:0{width}d}.jpg"))


@pytest.fixture
def otb_root(tmp_path):
    root = str(tmp_path / "otb")
    _otb_video(root, "Basketball", {"groundtruth_rect.txt": "1,2,3,4\n2,3,4,5\n"}, [1, 2])
    _otb_video(root, "Jogging", {"groundtruth_rect.1.txt": "1 2 3 4\n2 3 4 5\n",
                                 "groundtruth_rect.2.txt": "5\t6\t7\t8\n6\t7\t8\t9\n"}, [1, 2])
    _otb_video(root, "David", {"groundtruth_rect.txt": "1,1,5,5\n2,2,5,5\n"}, [299, 300, 301])
    _otb_video(root, "Tiger1", {"groundtruth_rect.txt": _rows([[i, i, 9, 9] for i in range(7)])}, range(1, 8))
    _otb_video(root, "Board", {"groundtruth_rect.txt": "1,1,5,5\n"}, [1], width=5)
    os.makedirs(os.path.join(root, "not_a_video"))  # no img/ -> not a sequence
    return root


def test_otb(otb_root):
    sequences = {s.name: s for s in load_benchmark("otb", otb_root)}
    assert sorted(sequences) == ["otb_Basketball", "otb_Board", "otb_David", "otb_Jogging_1", "otb_Jogging_2",
                                 "otb_Tiger1"]
    assert all(s.dataset == "otb" for s in sequences.values())
    # Comma, whitespace (space or tab) annotations all parse.
    assert sequences["otb_Jogging_1"].gt.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5]]
    assert sequences["otb_Jogging_2"].gt.tolist() == [[5, 6, 7, 8], [6, 7, 8, 9]]
    # David's annotation starts at frame 300; Board uses 5-digit names.
    assert [os.path.basename(f) for f in sequences["otb_David"].frames] == ["0300.jpg", "0301.jpg"]
    assert [os.path.basename(f) for f in sequences["otb_Board"].frames] == ["00001.jpg"]
    # Tiger1 omits its first 5 annotated frames: frames 6, 7 with GT rows 5, 6.
    tiger = sequences["otb_Tiger1"]
    assert [os.path.basename(f) for f in tiger.frames] == ["0006.jpg", "0007.jpg"]
    assert tiger.gt[:, 0].tolist() == [5, 6]


def test_otb_malformed_reports_the_line(otb_root):
    path = os.path.join(otb_root, "Basketball", "groundtruth_rect.txt")
    _write(path, "1,2,3,4\n2,3,4,5\n3;4;5;6\n")
    with pytest.raises(BenchmarkFormatError, match=r"groundtruth_rect.txt: line 3: expected 4 values separated by ','"):
        load_benchmark("otb", otb_root, sequence_list=["otb_Basketball"])


# -------------------------------------------------------------------------------------------------------- AVisT


def test_avist(tmp_path):
    root = str(tmp_path / "avist")
    _write(os.path.join(root, "anno", "air_show.txt"), "1 2 3 4\n0 0 0 0\n3 4 5 6\n")
    _write(os.path.join(root, "full_occlusion", "air_show_full_occlusion.txt"), "0,1,0")
    _write(os.path.join(root, "out_of_view", "air_show_out_of_view.txt"), "0,0,0")
    for i in (1, 2, 3):
        _jpg(os.path.join(root, "sequences", "air_show", f"img_{i:05d}.jpg"))
    (seq,) = load_benchmark("avist", root)
    assert seq.name == "air_show" and seq.dataset == "avist"
    assert seq.visible.tolist() == [True, False, True]
    assert seq.gt[2].tolist() == [3, 4, 5, 6]
    assert os.path.basename(seq.frames[0]) == "img_00001.jpg"
    # The AVisT annotation is split on a single space: a comma file (or a double space) is malformed.
    _write(os.path.join(root, "anno", "air_show.txt"), "1 2 3 4\n0  0 0 0\n3 4 5 6\n")
    with pytest.raises(BenchmarkFormatError, match="air_show.txt: line 2:"):
        load_benchmark("avist", root)


# -------------------------------------------------------------------------------------------------- TNL2K, ITB


def test_tnl2k(tmp_path):
    root = str(tmp_path / "tnl2k")
    for name in ("Zseq", "advSamp_01"):
        _write(os.path.join(root, name, "groundtruth.txt"), "1,2,3,4\n2,3,4,5\n")
        _write(os.path.join(root, name, "language.txt"), "  The RED Car on the left \nsecond line\n")
        for frame in ("00010.png", "00002.png"):
            _write(os.path.join(root, name, "imgs", frame))
    _write(os.path.join(root, "readme.txt"), "files at the root are not sequences")
    sequences = load_benchmark("tnl2k", root)
    assert _names(sequences) == ["Zseq", "advSamp_01"]
    seq = sequences[1]
    assert seq.dataset == "tnl2k" and seq.language == "the red car on the left"
    assert [os.path.basename(f) for f in seq.frames] == ["00002.png", "00010.png"]  # lexicographic


def test_itb(tmp_path):
    root = str(tmp_path / "itb")
    for scene, video, n in (("animal", "bird-1", 3), ("sport", "ball-2", 2)):
        _write(os.path.join(root, scene, video, "groundtruth.txt"), _rows([[i, i, 4, 4] for i in range(n)], " "))
        for i in range(1, n + 1):
            _write(os.path.join(root, scene, video, f"{i:04d}.jpg"))
    _write(os.path.join(root, "list.txt"), "scenes with a dot are skipped")
    sequences = load_benchmark("itb", root)
    assert _names(sequences) == ["bird-1", "ball-2"]
    assert sequences[0].dataset == "otb" and len(sequences[0].frames) == 3
    assert sequences[0].frames[2] == os.path.join(root, "animal", "bird-1", "0003.jpg")
    assert _names(load_benchmark("itb", root, sequence_list=["ball-2"])) == ["ball-2"]


# ---------------------------------------------------------------------------------------------------- generic


def test_sequence_list_file(lasot_root, tmp_path):
    listing = tmp_path / "mine.txt"
    listing.write_text("# my subset\nairplane-10\n")
    assert _names(load_benchmark("lasot", lasot_root, sequence_list=str(listing))) == ["airplane-10"]


def test_unknown_benchmark_and_root(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("vot2020", str(tmp_path))
    with pytest.raises(BenchmarkFormatError, match="root folder not found"):
        load_benchmark("lasot", str(tmp_path / "absent"))
    assert set(BENCHMARKS) == {"lasot", "lasot_ext", "got10k_test", "got10k_val", "trackingnet", "uav", "nfs", "otb",
                               "avist", "tnl2k", "itb"}


def test_read_boxes_delimiter_fallback(tmp_path):
    path = str(tmp_path / "boxes.txt")
    _write(path, "1\t2\t3\t4\n5\t6\t7\t8\n")
    assert read_boxes(path, ("\t", ",")).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    _write(path, "1,2,3,4\n5,6,7,8\n")
    assert read_boxes(path, ("\t", ",")).tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    _write(path, "")
    with pytest.raises(BenchmarkFormatError, match="no annotation rows"):
        read_boxes(path)


@pytest.mark.parametrize("name", ["otb", "lasot"])
def test_a_folder_of_another_layout_says_no_sequences_found(tmp_path, name):
    (tmp_path / "val" / "GOT-10k_Val_000001").mkdir(parents=True)  # a GOT-10k folder given as another benchmark
    (tmp_path / "val" / "list.txt").write_text("GOT-10k_Val_000001\n")
    with pytest.raises(BenchmarkFormatError, match=rf"no sequences found in .* for {name} \(expected .*\)"):
        load_benchmark(name, str(tmp_path))
