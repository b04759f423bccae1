"""Tests of grm_jax/data/datasets/ and grm_jax/data/source.py on tiny fake datasets in each official layout.

Every fake frame is a flat colour whose red channel encodes (sequence, frame), so a decoded frame can be traced back
to the file it came from. Each dataset includes the broken cases preparation must survive: an unreadable JPEG, a
NaN box, an absent target, a missing annotation line, a sequence shorter than 20 frames.
"""

from __future__ import annotations

import json
import logging
import pathlib

import cv2
import numpy as np
import pytest

from grm_jax.data import synthetic
from grm_jax.data.datasets import INDEX_FILE, REPORT_FILE, make_builder, prepare, prepare_dataset, synthetic_config
from grm_jax.data.datasets.__main__ import main
from grm_jax.data.datasets.common import parse_box_lines, parse_flag_values
from grm_jax.data.source import DatasetSource, FrameUnavailableError, MemorySource, decode_rgb, encode_jpeg

H, W = 24, 32


def red_of(seq: int, t: int) -> int:
    """The red level of frame t of fake sequence seq (distinct for the few frames used here)."""
    return (40 + 7 * seq + 3 * t) % 256


def write_frame(path: pathlib.Path, seq: int, t: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = red_of(seq, t), 100, 200  # RGB
    assert cv2.imwrite(str(path), image[..., ::-1])  # OpenCV writes BGR


def write_garbage(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a jpeg")


def boxes_text(boxes, sep=",") -> str:
    return "".join(sep.join(str(v) for v in box) + "\n" for box in boxes)


def default_boxes(n: int) -> list:
    return [[2 + t % 5, 3, 10, 8] for t in range(n)]


def report_of(builder) -> str:
    return (pathlib.Path(builder.data_dir) / REPORT_FILE).read_text()


def assert_red(image: np.ndarray, seq: int, t: int) -> None:
    """Decoded RGB frame has the expected flat colour (JPEG of a flat image is within a couple of levels)."""
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), [red_of(seq, t), 100, 200], atol=3)


# ---------------------------------------------------------------------------------------------------------------
# GOT-10k


@pytest.fixture(scope="module")
def got10k_root(tmp_path_factory):
    """list.txt: A (25 frames: frame 3 absent, frame 4 cover 0, frame 6 garbage JPEG, frame 8 NaN box, frame 9
    negative width), B (12 frames: shorter than 20), C (22 frames: absence.label one line short, frame 5 missing)."""
    root = tmp_path_factory.mktemp("got10k") / "train"
    lengths = {"GOT-10k_Train_000001": 25, "GOT-10k_Train_000002": 12, "GOT-10k_Train_000003": 22}
    for s, (name, n) in enumerate(lengths.items()):
        folder = root / name
        for t in range(n):
            write_frame(folder / f"{t + 1:08d}.jpg", s, t)
        boxes = default_boxes(n)
        absence, cover = [0] * n, [8] * n
        if s == 0:
            absence[3], cover[4] = 1, 0
            write_garbage(folder / f"{6 + 1:08d}.jpg")
            boxes[8] = ["nan", "nan", "nan", "nan"]
            boxes[9] = [2, 3, -4, 8]
        if s == 2:
            absence = absence[:-1]
            (folder / f"{5 + 1:08d}.jpg").unlink()
        (folder / "groundtruth.txt").write_text(boxes_text(boxes))
        (folder / "absence.label").write_text("".join(f"{v}\n" for v in absence))
        (folder / "cover.label").write_text("".join(f"{v}\n" for v in cover))
    (root / "list.txt").write_text("".join(f"{name}\n" for name in lengths))
    (root / "vot_split.txt").write_text("0\n2\n")
    return root


def test_got10k_full_records_and_visibility(got10k_root, tmp_path):
    builder = prepare_dataset("GOT10K_train", got10k_root, tmp_path)
    source = DatasetSource(builder.data_dir)
    assert source.num_sequences == 3 and source.is_video
    assert [source.sequence_info(i).length for i in range(3)] == [25, 12, 22]
    expected_a = np.ones(25, bool)
    expected_a[[3, 4, 6, 8, 9]] = False
    np.testing.assert_array_equal(source.sequence_info(0).visible, expected_a)
    np.testing.assert_array_equal(source.sequence_info(1).visible, np.ones(12, bool))
    expected_c = np.ones(22, bool)
    expected_c[[5, 21]] = False  # missing image; missing absence entry
    np.testing.assert_array_equal(source.sequence_info(2).visible, expected_c)
    # Records hold the frame's own image (1-based file names), the box, and ids.
    image, box = source.frame(0, 10)
    assert_red(image, 0, 10)
    np.testing.assert_array_equal(box, [2.0, 3.0, 10.0, 8.0])
    record = source.record(2, 7)
    assert int(record["sequence"]) == 2 and int(record["frame"]) == 7 and bool(record["visible"])
    with pytest.raises(FrameUnavailableError):
        source.frame(0, 6)  # the garbage JPEG is not stored
    np.testing.assert_array_equal(source.record(0, 8)["box"], np.zeros(4))  # NaN box stored as zeros
    # Every problem is reported with the file it concerns.
    report = report_of(builder)
    assert str(got10k_root / "GOT-10k_Train_000001" / "00000007.jpg") in report
    assert f"{got10k_root / 'GOT-10k_Train_000001' / 'groundtruth.txt'}\tline 9: non-finite box" in report
    assert "line 10: negative box size" in report
    assert str(got10k_root / "GOT-10k_Train_000003" / "00000006.jpg") in report
    assert str(got10k_root / "GOT-10k_Train_000003" / "absence.label") in report
    assert report.count("\n") == 1 + 5  # header + the five problems above


def test_got10k_vot_split_file(got10k_root, tmp_path):
    builder = prepare_dataset("GOT10K_vot_train", got10k_root, tmp_path, split_file=got10k_root / "vot_split.txt")
    source = DatasetSource(builder.data_dir)
    assert list(source.names) == ["GOT-10k_Train_000001", "GOT-10k_Train_000003"]
    assert_red(source.frame(1, 0)[0], 2, 0)  # sequence index 1 is list.txt's third sequence


def test_got10k_vot_needs_a_split_file(got10k_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="split_file"):
        prepare_dataset("GOT10K_vot_train", got10k_root, tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# LaSOT


@pytest.fixture(scope="module")
def lasot_root(tmp_path_factory):
    """cat-1 (24 frames: frame 2 fully occluded, frame 5 out of view, frame 7 garbage, frame 11 NaN box,
    groundtruth one line short), cat-2 (not in the split), dog-3 (10 frames)."""
    root = tmp_path_factory.mktemp("lasot")
    for s, (name, n) in enumerate({"cat-1": 24, "cat-2": 21, "dog-3": 10}.items()):
        folder = root / name.split("-")[0] / name
        for t in range(n):
            write_frame(folder / "img" / f"{t + 1:08d}.jpg", s, t)
        boxes = default_boxes(n)
        occlusion, out_of_view = [0] * n, [0] * n
        if name == "cat-1":
            occlusion[2], out_of_view[5] = 1, 1
            write_garbage(folder / "img" / f"{7 + 1:08d}.jpg")
            boxes[11] = ["NaN", "NaN", "NaN", "NaN"]
            boxes = boxes[:-1]
        (folder / "groundtruth.txt").write_text(boxes_text(boxes))
        (folder / "full_occlusion.txt").write_text(",".join(map(str, occlusion)))
        (folder / "out_of_view.txt").write_text(",".join(map(str, out_of_view)))
    (root / "training_set.txt").write_text("cat-1\ndog-3\n")
    return root


def test_lasot_records_and_visibility(lasot_root, tmp_path):
    builder = prepare_dataset("LASOT", lasot_root, tmp_path)
    source = DatasetSource(builder.data_dir)
    assert list(source.names) == ["cat-1", "dog-3"]
    assert [source.sequence_info(i).length for i in range(2)] == [23, 10]  # one groundtruth line short
    expected = np.ones(23, bool)
    expected[[2, 5, 7, 11]] = False
    np.testing.assert_array_equal(source.sequence_info(0).visible, expected)
    assert_red(source.frame(1, 4)[0], 2, 4)  # dog-3 is the third folder written
    report = report_of(builder)
    assert str(lasot_root / "cat" / "cat-1" / "img" / "00000008.jpg") in report
    assert "line 12: non-finite box" in report


def test_lasot_user_split_file(lasot_root, tmp_path):
    split = tmp_path / "mine.txt"
    split.write_text("cat-2\n")
    builder = prepare_dataset("lasot", lasot_root, tmp_path / "data", split_file=split)
    source = DatasetSource(builder.data_dir)
    assert list(source.names) == ["cat-2"] and source.sequence_info(0).visible.all()


# ---------------------------------------------------------------------------------------------------------------
# TrackingNet


@pytest.fixture(scope="module")
def trackingnet_root(tmp_path_factory):
    """TRAIN_0: video a (65 frames, frame 30 garbage), b (31 frames, a NaN box at frame 0); TRAIN_1..11 absent."""
    root = tmp_path_factory.mktemp("trackingnet")
    for s, (name, n) in enumerate({"a": 65, "b": 31}.items()):
        chunk = root / "TRAIN_0"
        for t in range(n):
            write_frame(chunk / "frames" / name / f"{t}.jpg", s, t)
        boxes = default_boxes(n)
        if name == "a":
            write_garbage(chunk / "frames" / name / "30.jpg")
        else:
            boxes[0] = ["nan"] * 4
        (chunk / "anno").mkdir(parents=True, exist_ok=True)
        (chunk / "anno" / f"{name}.txt").write_text(boxes_text(boxes))
    return root


def test_trackingnet_only_annotated_frames_visible(trackingnet_root, tmp_path):
    builder = prepare_dataset("TRACKINGNET", trackingnet_root, tmp_path)
    source = DatasetSource(builder.data_dir)
    assert list(source.names) == ["TRAIN_0/a", "TRAIN_0/b"]
    np.testing.assert_array_equal(np.flatnonzero(source.sequence_info(0).visible), [0, 60, 64])  # 30: garbage
    np.testing.assert_array_equal(np.flatnonzero(source.sequence_info(1).visible), [30])  # 0: NaN box
    assert_red(source.frame(0, 60)[0], 0, 60)  # 0-based file names
    assert_red(source.frame(0, 64)[0], 0, 64)
    with pytest.raises(FrameUnavailableError):
        source.frame(0, 1)  # not an annotated frame: its image is not stored
    report = report_of(builder)
    assert str(trackingnet_root / "TRAIN_0" / "frames" / "a" / "30.jpg") in report
    assert "TRAIN_5" in report  # missing chunks are reported, not fatal


# ---------------------------------------------------------------------------------------------------------------
# COCO


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """Image 1: annotations 10 and 11; image 2 (garbage file): annotation 20 and a crowd annotation 21; image 3:
    annotation 30 with zero width."""
    root = tmp_path_factory.mktemp("coco")
    images = root / "images" / "train2017"
    write_frame(images / "000001.jpg", 0, 0)
    write_garbage(images / "000002.jpg")
    write_frame(images / "000003.jpg", 2, 0)
    data = {
        "images": [{"id": i, "file_name": f"00000{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"id": 11, "image_id": 1, "bbox": [1, 2, 8, 6], "iscrowd": 0},
            {"id": 10, "image_id": 1, "bbox": [3, 4, 5, 6], "iscrowd": 0},
            {"id": 21, "image_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 20, "image_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 0},
            {"id": 30, "image_id": 3, "bbox": [1, 1, 0, 5], "iscrowd": 0},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return root


def test_coco_one_frame_sequences_share_images(coco_root, tmp_path):
    builder = prepare_dataset("COCO17", coco_root, tmp_path)
    source = DatasetSource(builder.data_dir)
    assert not source.is_video
    assert list(source.names) == ["10", "11", "20", "30"]  # non-crowd, by (image, annotation id)
    assert [source.sequence_info(i).length for i in range(4)] == [1, 1, 1, 1]
    assert [bool(source.sequence_info(i).visible[0]) for i in range(4)] == [True, True, False, False]
    image, box = source.frame(1, 0)
    assert_red(image, 0, 0)
    np.testing.assert_array_equal(box, [1, 2, 8, 6])
    assert int(source.record(1, 0)["image_record"]) == 0 and source.record(1, 0)["image"] == b""  # stored once
    with pytest.raises(FrameUnavailableError):
        source.frame(2, 0)
    assert str(coco_root / "images" / "train2017" / "000002.jpg") in report_of(builder)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic, resumability, parsing helpers


def test_synthetic_builder_matches_generator_and_memory_source(tmp_path):
    config = synthetic_config(3, 1, seed=5, min_length=20, max_length=30, height=48, width=64)
    builder = prepare(make_builder("synthetic_tracking", tmp_path, config=config))
    source = DatasetSource(builder.data_dir)
    memory = MemorySource.synthetic(3, seed=5, min_length=20, max_length=30, height=48, width=64, jpeg_quality=90)
    assert source.num_sequences == 3 and DatasetSource(builder.data_dir, "val").num_sequences == 1
    for i in range(3):
        seed = synthetic.split_sequence_seed(5, "train", i)
        frames, boxes, visible = synthetic.generate_sequence(seed, source.sequence_info(i).length, 48, 64)
        np.testing.assert_array_equal(source.sequence_info(i).visible, visible)
        np.testing.assert_array_equal(memory.sequence_info(i).visible, visible)
        for t in (0, len(boxes) - 1):
            image, box = source.frame(i, t)
            np.testing.assert_array_equal(box, boxes[t])
            np.testing.assert_array_equal(image, memory.frame(i, t)[0])  # same JPEG bytes → same pixels
            np.testing.assert_array_equal(image, decode_rgb(encode_jpeg(frames[t], 90)))  # the generated frame


def test_synthetic_val_min_contrast_applies_to_the_val_split_only(tmp_path):
    """val_min_contrast recolours camouflaged held-out targets; the training split is the one without it."""
    easy = synthetic.Difficulty(max_distractors=0, max_occlusions=0, exit_probability=0.0)
    plain = synthetic_config(2, 6, seed=1, min_length=20, max_length=22, height=48, width=64, difficulty=easy)
    firm = synthetic_config(2, 6, seed=1, min_length=20, max_length=22, height=48, width=64, difficulty=easy,
                            val_min_contrast=90.0)
    assert firm.name == plain.name + "_v90"
    a, b = (prepare(make_builder("synthetic_tracking", tmp_path, config=c)) for c in (plain, firm))
    train_a, train_b = DatasetSource(a.data_dir), DatasetSource(b.data_dir)
    for i in range(2):
        np.testing.assert_array_equal(train_b.frame(i, 5)[0], train_a.frame(i, 5)[0])
    val_a, val_b = DatasetSource(a.data_dir, "val"), DatasetSource(b.data_dir, "val")
    held_out = firm.split_difficulty("val")
    changed = 0
    for k in range(6):
        seed = synthetic.split_sequence_seed(1, "val", k)
        assert synthetic.palette_contrast(*synthetic.sequence_palettes(seed, held_out)) >= 90.0
        image_a, box_a = val_a.frame(k, 0)
        image_b, box_b = val_b.frame(k, 0)
        np.testing.assert_array_equal(box_b, box_a)
        changed += not np.array_equal(image_b, image_a)
    assert changed  # of 6 default draws, some are closer than 90 (about 3 in 10)
    with pytest.raises(ValueError, match="min_contrast"):
        synthetic_config(2, 1, val_min_contrast=-5.0)


def test_prepared_dataset_is_reused(tmp_path, monkeypatch):
    config = synthetic_config(2, 1, min_length=20, max_length=22, height=32, width=40)
    first = prepare(make_builder("synthetic_tracking", tmp_path, config=config))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in pathlib.Path(first.data_dir).iterdir())

    def fail(*args, **kwargs):
        raise AssertionError("generation ran again")

    monkeypatch.setattr(type(first), "_frame_bytes", fail)
    again = prepare(make_builder("synthetic_tracking", tmp_path, config=config))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in pathlib.Path(again.data_dir).iterdir()) == before


def test_crashed_preparation_can_be_rerun(got10k_root, tmp_path, monkeypatch):
    from grm_jax.data.datasets import common

    calls = {"n": 0}
    original = common.read_image_bytes

    def crash_midway(path, verify):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt("simulated crash")
        return original(path, verify)

    monkeypatch.setattr(common, "read_image_bytes", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("got10k/full", got10k_root, tmp_path, num_threads=1)
    assert not (tmp_path / "got10k" / "full" / "1.0.0").exists()
    monkeypatch.setattr(common, "read_image_bytes", original)
    builder = prepare_dataset("got10k/full", got10k_root, tmp_path)
    source = DatasetSource(builder.data_dir)
    assert source.num_sequences == 3 and (pathlib.Path(builder.data_dir) / INDEX_FILE.format(split="train")).exists()


def test_killed_preparation_leftovers_are_removed(tmp_path):
    """A killed run leaves TFDS's incomplete.* folder behind; the next prepare() deletes it and succeeds."""
    config = synthetic_config(1, 1, min_length=20, max_length=20, height=32, width=40)
    builder = make_builder("synthetic_tracking", tmp_path, config=config)
    stale = pathlib.Path(builder.data_dir).parent / "incomplete.ABC123_1.0.0"
    stale.mkdir(parents=True)
    (stale / "bucket_0.tmp").write_bytes(b"partial")
    prepare(builder)
    assert not stale.exists() and DatasetSource(builder.data_dir).num_sequences == 1


def test_source_pickles_without_open_files(got10k_root, tmp_path):
    import pickle

    source = DatasetSource(prepare_dataset("got10k/full", got10k_root, tmp_path).data_dir)
    source.frame(0, 0)  # opens the reader
    clone = pickle.loads(pickle.dumps(source))
    assert clone._records is None
    np.testing.assert_array_equal(clone.frame(0, 1)[0], source.frame(0, 1)[0])


def test_parse_helpers(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,2,3,4\n5\t6\t7\t8\nbad line\n")
    boxes, problems, bad = parse_box_lines(path, expected=4)
    np.testing.assert_array_equal(boxes[:2], [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert np.isnan(boxes[2:]).all() and bad == {2, 3} and len(problems) == 2
    flags = tmp_path / "f.txt"
    flags.write_text("0,1,1")
    values, problems = parse_flag_values(flags, 4, one_line=True)
    np.testing.assert_array_equal(values, [0, 1, 1, -1])
    assert len(problems) == 1


def test_decode_rgb_swaps_channels():
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255  # red in RGB
    ok, buf = cv2.imencode(".png", image[..., ::-1])
    assert ok
    np.testing.assert_array_equal(decode_rgb(buf.tobytes()), image)


def test_preparation_warning_names_the_final_report(got10k_root, tmp_path, caplog):
    """The warning about problems points at the report where it stays, not at TFDS's temporary folder."""
    with caplog.at_level(logging.WARNING):
        builder = prepare_dataset("GOT10K_train", got10k_root, tmp_path)
    report = pathlib.Path(builder.data_dir) / REPORT_FILE
    (message,) = [r.getMessage() for r in caplog.records if "problem(s) while preparing" in r.getMessage()]
    assert message.endswith(f"5 problem(s) while preparing, see {report}") and report.is_file()


# ---------------------------------------------------------------------------------------------------------------
# The command line: python -m grm_jax.data.datasets NAME ROOT DATA_DIR, called from Python


def test_main_twice_in_one_process(got10k_root, tmp_path, capsys):
    """Two calls with other arguments: each prepares (or refuses) what its own argv says."""
    split = ["--split_file", str(got10k_root / "vot_split.txt")]
    assert main(["grm-datasets", "GOT10K_vot_train", str(got10k_root), str(tmp_path / "a"), *split]) == 0
    assert f"prepared GOT10K_vot_train in {tmp_path / 'a'}" in capsys.readouterr().out
    assert main(["grm-datasets", "LASOT", str(tmp_path / "none"), str(tmp_path / "b")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: dataset folder {tmp_path / 'none'} does not exist or is empty (the LASOT data in its official "
        "layout goes there)"]
    assert not (tmp_path / "b").exists()
    assert main(["grm-datasets", "LASOT", str(got10k_root)]) == 2  # DATA_DIR missing
    assert "expected NAME ROOT DATA_DIR" in capsys.readouterr().err
