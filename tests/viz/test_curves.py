"""Training curves (``python -m grm_jax.viz.curves``) from a synthetic ``metrics.jsonl``."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from grm_jax.viz import curves

# Matplotlib's first three default line colours (RGB): a drawn curve leaves pixels of exactly these.
C0, C1, C2 = (31, 119, 180), (255, 127, 14), (44, 160, 44)


def _write_metrics(workdir, steps, resumed_from=None):
    records = []
    for s in steps:
        records.append({"step": s, "epoch": s / 10, "samples_per_s": 50.0 + s, "Ls/total": 3.0 / s,
                        "Ls/giou": 1.0 / s, "Ls/l1": 0.5 / s, "Ls/loc": 1.5 / s, "IoU": 1 - 1.0 / s,
                        "grad_norm": 0.1 * s, "interaction_ratio": [0.1, 0.5, 0.9 - 0.01 * s],
                        "lr/head": 4e-4, "lr/backbone": 4e-5, "lr/divide": 4e-4 if s < 30 else 4e-5})
    if resumed_from is not None:  # a restart appends the steps after its checkpoint once more
        records += [dict(r, IoU=0.123) for r in records if r["step"] > resumed_from]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _has(image, colour) -> bool:
    return bool(np.all(image == colour, axis=-1).any())


def test_read_metrics_keeps_the_last_record_of_a_step(tmp_path):
    _write_metrics(tmp_path, [10, 20, 30, 40], resumed_from=20)
    records = curves.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    _, iou = curves.series(records, "IoU")
    np.testing.assert_array_equal(iou, [0.9, 0.95, 0.123, 0.123])
    _, ratio = curves.series(records, "interaction_ratio")
    assert ratio.shape == (4, 3)


def test_one_png_per_group_with_its_curves(tmp_path):
    _write_metrics(tmp_path, range(10, 110, 10))
    written = curves.write_curves(tmp_path)
    assert sorted(written) == sorted(curves.GROUPS)
    sizes = {"throughput": (360, 900)}
    for group, path in written.items():
        assert path == tmp_path / "curves" / f"{group}.png"
        assert _rgb(path).shape == (*sizes.get(group, (360, 600)), 3), group  # figsize × 100 dpi
    # One colour per line: four loss terms, three learning rates, three layers, one IoU curve.
    assert all(_has(_rgb(written["losses"]), c) for c in (C0, C1, C2))
    assert all(_has(_rgb(written["interaction_ratio"]), c) for c in (C0, C1, C2))
    assert all(_has(_rgb(written["learning_rates"]), c) for c in (C0, C1, C2))
    iou = _rgb(written["iou"])
    assert _has(iou, C0) and not _has(iou, C1)


def test_groups_without_data_are_left_out_and_the_cli(tmp_path, capsys):
    lines = [{"step": 2, "IoU": 0.5}, {"step": 4, "IoU": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    assert curves.main(["grm-curves", str(tmp_path), "--out", str(tmp_path / "png")]) == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["iou.png"]
    assert "iou:" in capsys.readouterr().out


def test_missing_metrics_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        curves.write_curves(tmp_path)


def test_main_twice_in_one_process_and_its_errors(tmp_path, capsys):
    """Two workdirs in one process: each call plots its own; a missing one is one line (exit 1)."""
    for name, key in (("a", "IoU"), ("b", "grad_norm")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"step": 1, key: 0.5}) + "\n")
        assert curves.main(["grm-curves", str(tmp_path / name)]) == 0
    assert sorted(p.name for p in (tmp_path / "a" / "curves").iterdir()) == ["iou.png"]
    assert sorted(p.name for p in (tmp_path / "b" / "curves").iterdir()) == ["throughput.png"]
    capsys.readouterr()
    assert curves.main(["grm-curves", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "metrics.jsonl" in err[0]
    assert curves.main(["grm-curves"]) == 2  # WORKDIR is required
    assert "expected one WORKDIR" in capsys.readouterr().err
