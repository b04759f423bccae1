"""Report: two fake trackers on a fake benchmark -> ranked Markdown table and valid PNG plots."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from grm_jax.evaluate.benchmarks import load_benchmark
from grm_jax.evaluate.report import compare_trackers, find_result_file, main, write_report
from grm_jax.evaluate.results import write_results

GT = np.array([[10, 10, 20, 20], [12, 10, 20, 20], [14, 10, 20, 20], [16, 10, 20, 20]], dtype=np.float64)
SHIFT = np.array([10, 0, 0, 0], dtype=np.float64)


def _nfs_root(tmp_path, names=("bee", "dog")):
    root = tmp_path / "nfs"
    for name in names:
        (root / "anno").mkdir(parents=True, exist_ok=True)
        (root / "anno" / f"nfs_{name}.txt").write_text("".join("\t".join(str(v) for v in box) + "\n" for box in GT))
        frames = root / "sequences" / name
        frames.mkdir(parents=True)
        for i in range(1, len(GT) + 1):
            (frames / f"{i:05d}.jpg").write_bytes(b"")
    return str(root)


def _trackers(tmp_path, sequences):
    """'good' predicts the GT exactly; 'shifted' is 10 px to the right from frame 1 on."""
    good, shifted = str(tmp_path / "good"), str(tmp_path / "shifted")
    for seq in sequences:
        write_results(good, seq.name, seq.dataset, seq.gt)
        write_results(shifted, seq.name, seq.dataset, np.vstack([seq.gt[:1], seq.gt[1:] + SHIFT]))
    return good, shifted


def test_ranking_numbers_and_plots(tmp_path):
    sequences = load_benchmark("nfs", _nfs_root(tmp_path))
    good, shifted = _trackers(tmp_path, sequences)
    out = write_report([shifted, good], sequences, str(tmp_path / "report"), "nfs")
    best, worst = out["summaries"]
    assert (best.name, worst.name) == ("good", "shifted")
    # good: IoU 1 on every frame, counted above every threshold but 1.0 (strict '>'): AUC = 20/21.
    assert best.scores["AUC"] == pytest.approx(100 * 20 / 21, abs=1e-9)  # exact up to float rounding
    assert best.scores["P@20"] == pytest.approx(100.0, abs=1e-9)
    # shifted: frame 0 is the GT (IoU 1), frames 1-3 have IoU 200/600 = 1/3 (+1-pixel convention):
    # success = 1 for t <= 0.30 (7 thresholds), 1/4 for 0.35..0.95 (13), 0 at 1.0 -> AUC = (7 + 13/4) / 21.
    assert worst.scores["AUC"] == pytest.approx(100 * (7 + 13 / 4) / 21, abs=1e-9)
    assert worst.scores["OP50"] == pytest.approx(25.0, abs=1e-9)
    assert worst.scores["P@20"] == pytest.approx(100.0, abs=1e-9)  # 10 px centre error <= 20 px

    markdown = open(out["markdown"]).read()
    rows = [line for line in markdown.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | good | 95.24 |") and rows[1].startswith("| 2 | shifted | 48.81 |")
    assert "AO" not in markdown  # GOT-10k columns only for got10k_val
    for kind in ("success", "precision", "norm_precision"):
        assert out[kind] == str(tmp_path / "report" / f"{kind}_nfs.png")
        image = cv2.imread(out[kind])
        assert image is not None and image.shape == (480, 640, 3)
        assert image.std() > 10  # not a blank canvas: curves, axes and legend were drawn


def test_missing_result_file(tmp_path):
    sequences = load_benchmark("nfs", _nfs_root(tmp_path))
    good, shifted = _trackers(tmp_path, sequences)
    os.remove(os.path.join(shifted, "nfs_dog.txt"))
    with pytest.raises(FileNotFoundError, match="nfs_dog.txt: result file not found"):
        compare_trackers([good, shifted], sequences)
    # skip_missing drops the sequence for every tracker, keeping the comparison fair.
    summaries = compare_trackers([good, shifted], sequences, skip_missing=True)
    assert all(s.sequences == ["nfs_bee"] for s in summaries)


def test_result_lookup_without_prefix(tmp_path):
    sequences = load_benchmark("nfs", _nfs_root(tmp_path, names=("bee",)))
    raw = tmp_path / "official"
    raw.mkdir()
    (raw / "bee.txt").write_text("10\t10\t20\t20\n")  # a bare name, tab-separated
    assert find_result_file(str(raw), sequences[0]) == str(raw / "bee.txt")


def _got10k_val(tmp_path, sequences):
    """A GOT-10k val folder in the official layout: list.txt, groundtruth, frames, cover.label, meta_info.ini."""
    root = tmp_path / "got10k" / "val"
    root.mkdir(parents=True)
    (root / "list.txt").write_text("".join(name + "\n" for name in sequences))
    for name, (gt, cover, (width, height)) in sequences.items():
        (root / name).mkdir()
        (root / name / "groundtruth.txt").write_text("".join(",".join(f"{v:.4f}" for v in box) + "\n" for box in gt))
        (root / name / "cover.label").write_text("".join(f"{c}\n" for c in cover))
        (root / name / "meta_info.ini").write_text(f"[METAINFO]\nurl: x\nresolution: ({width}, {height})\n")
        for i in range(1, len(gt) + 1):
            (root / name / f"{i:08d}.jpg").write_bytes(b"")
    return load_benchmark("got10k_val", str(tmp_path / "got10k"))


def test_got10k_val_columns(tmp_path):
    name = "GOT-10k_Val_000001"
    sequences = _got10k_val(tmp_path, {name: (GT, [8] * len(GT), (640, 480))})
    good, shifted = str(tmp_path / "good"), str(tmp_path / "shifted")
    write_results(good, name, "got10k", GT, times=[0.01] * 4)
    write_results(shifted, name, "got10k", np.vstack([GT[:1], GT[1:] + SHIFT]), times=[0.01] * 4)
    out = write_report([good, shifted], sequences, str(tmp_path / "report"), "got10k_val")
    best, worst = out["summaries"]
    # Frames 1..3, the toolkit's IoU (no +1): 1 for good; 10x20 overlap of two 20x20 boxes = 1/3 for shifted.
    assert best.scores["AO"] == pytest.approx(100.0, abs=1e-9)
    assert worst.scores["AO"] == pytest.approx(100 / 3, abs=1e-9)
    assert worst.scores["SR0.50"] == pytest.approx(0.0, abs=1e-9)
    assert "| AO | SR0.50 | SR0.75 |" in open(out["markdown"]).read()


def _toolkit_transcription(result_files, gts, covers, resolutions):
    """The GOT-10k toolkit's val report, transcribed frame by frame from its definitions (independent of
    grm_jax.evaluate.metrics): boxes read back from the files, frames 1.. with cover > 0, each box clipped to the
    image (x, y into [0, W] / [0, H], then w, h into [0, W − x] / [0, H − y]), IoU = inter / (union + eps) clipped
    to [0, 1]; all frames of all sequences pooled; AO = mean, SR_t = share of IoU > t."""
    eps = np.finfo(float).eps
    ious = []
    for path, gt, cover, (width, height) in zip(result_files, gts, covers, resolutions):
        pred = [[float(v) for v in line.split(",")] for line in open(path).read().split()]
        for t in range(1, len(gt)):
            if cover[t] <= 0:
                continue
            boxes = []
            for x, y, w, h in (pred[t], list(gt[t])):
                x = min(max(x, 0.0), width)
                y = min(max(y, 0.0), height)
                boxes.append((x, y, min(max(w, 0.0), width - x), min(max(h, 0.0), height - y)))
            (ax, ay, aw, ah), (bx, by, bw, bh) = boxes
            iw = max(min(ax + aw, bx + bw) - max(ax, bx), 0.0)
            ih = max(min(ay + ah, by + bh) - max(ay, by), 0.0)
            inter = iw * ih
            ious.append(min(max(inter / (aw * ah + bw * bh - inter + eps), 0.0), 1.0))
    n = len(ious)
    return dict(AO=100 * sum(ious) / n, SR50=100 * sum(i > 0.5 for i in ious) / n,
                SR75=100 * sum(i > 0.75 for i in ious) / n)


def test_got10k_scores_equal_the_toolkit_transcription(tmp_path):
    """Sequences of different lengths, cover-0 frames, predictions and ground truth reaching outside the image:
    AO / SR0.50 / SR0.75 as the GOT-10k toolkit computes them, not the per-sequence mean."""
    rng = np.random.default_rng(5)
    spec = {}
    for i, (length, size) in enumerate([(12, (64, 48)), (30, (80, 60)), (7, (50, 50))]):
        xy = rng.uniform(-10, 45, (length, 2))
        wh = rng.uniform(5, 30, (length, 2))
        cover = rng.integers(0, 9, length)
        cover[[0, 2]] = [8, 0]
        spec[f"GOT-10k_Val_{i + 1:06d}"] = (np.hstack([xy, wh]), cover, size)
    sequences = _got10k_val(tmp_path, spec)
    folder = str(tmp_path / "ours")
    files = []
    for name, (gt, _, _) in spec.items():
        pred = np.hstack([gt[:, :2] + rng.normal(0, 6, (len(gt), 2)), gt[:, 2:] * rng.uniform(0.6, 1.5, (len(gt), 2))])
        pred[0] = gt[0]
        files.append(write_results(folder, name, "got10k", pred, times=[0.01] * len(pred)))
    (summary,) = compare_trackers([folder], sequences, got10k=True)
    expected = _toolkit_transcription(files, [s.gt for s in sequences], [s[1] for s in spec.values()],
                                      [s[2] for s in spec.values()])  # the ground truth as read from its files
    assert summary.scores["AO"] == pytest.approx(expected["AO"], abs=1e-10)
    assert summary.scores["SR0.50"] == pytest.approx(expected["SR50"], abs=1e-10)
    assert summary.scores["SR0.75"] == pytest.approx(expected["SR75"], abs=1e-10)
    # The per-sequence mean is another number (here it differs), kept under its own name.
    assert summary.scores["AO_seq_mean"] != pytest.approx(summary.scores["AO"], abs=1e-3)


def test_got10k_val_without_cover_labels_names_the_file(tmp_path):
    name = "GOT-10k_Val_000001"
    sequences = _got10k_val(tmp_path, {name: (GT, [8] * len(GT), (640, 480))})
    os.remove(tmp_path / "got10k" / "val" / name / "cover.label")
    sequences = load_benchmark("got10k_val", str(tmp_path / "got10k"))
    write_results(str(tmp_path / "r"), name, "got10k", GT, times=[0.01] * 4)
    with pytest.raises(FileNotFoundError, match="cover.label: missing"):
        compare_trackers([str(tmp_path / "r")], sequences, got10k=True)


def test_command_line(tmp_path, capsys):
    root = _nfs_root(tmp_path)
    good, shifted = _trackers(tmp_path, load_benchmark("nfs", root))
    out_dir = str(tmp_path / "cli")
    assert main(["grm-report", "--dataset", "nfs", "--data_dir", root, "--out", out_dir, f"ours={shifted}", good]) == 0
    printed = capsys.readouterr().out
    assert printed.index("| 1 | good |") < printed.index("| 2 | ours |")
    assert sorted(os.listdir(out_dir)) == ["norm_precision_nfs.png", "precision_nfs.png", "report_nfs.md",
                                           "success_nfs.png"]


def test_command_line_twice_in_one_process(tmp_path, capsys):
    """Two calls with other names and output folders: each report has its own."""
    root = _nfs_root(tmp_path)
    good, shifted = _trackers(tmp_path, load_benchmark("nfs", root))
    for name, out_dir in (("first", tmp_path / "a"), ("second", tmp_path / "b")):
        argv = ["grm-report", "--dataset=nfs", f"--data_dir={root}", f"--out={out_dir}", f"{name}={good}", shifted]
        assert main(argv) == 0
        assert f"| 1 | {name} |" in capsys.readouterr().out
        assert f"| 1 | {name} |" in (out_dir / "report_nfs.md").read_text()
    assert main(["grm-report", "--dataset=nfs", f"--data_dir={root}"]) == 2  # no result folder
    assert "expected at least one result folder" in capsys.readouterr().err
    assert main(["grm-report", f"--data_dir={root}", good]) == 2
    assert "--dataset" in capsys.readouterr().err
