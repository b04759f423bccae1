"""benchmarks/accelerator.sh: the dry run (every part on the CPU with the tiny GRM) and the budget handling."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accelerator  # noqa: E402

DRY_RUN_BUDGET_S = accelerator.DEFAULT_BUDGET_S[True]


@pytest.mark.timeout(DRY_RUN_BUDGET_S + 120)
def test_dry_run_measures_every_part(tmp_path):
    """The whole script, as the GPU machine runs it, on the CPU: every part ends ok and fills its table (within
    the dry run's budget: ~90 s on a fast 2-core CPU)."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "accelerator.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=DRY_RUN_BUDGET_S + 100)
    report = json.loads((tmp_path / "accelerator.json").read_text())
    status = {p["name"]: (p["status"], p["note"]) for p in report["parts"]}
    assert proc.returncode == 0, (status, proc.stdout[-3000:], proc.stderr[-3000:])
    assert list(status) == [p.name for p in accelerator.parts(True, sys.executable)]
    assert report["budget_s"] == DRY_RUN_BUDGET_S
    parts = {p["name"]: p for p in report["parts"]}
    rows = {name: accelerator.part_rows(part) for name, part in parts.items()}
    parity = parts["parity"]["outputs"][0]["rows"]
    assert parity["tests"] >= 1 and parity["failures"] == parity["errors"] == 0
    assert {(r["precision"], r["threshold"]) for r in rows["precision"]} == {
        (p, t) for p in ("highest", "default", "bfloat16") for t in (0.0, 0.4)}
    # masked float32 / tf32 / bfloat16 at batch 1 and 2; on a CPU tf32 is float32: no deviation at all
    assert [(r["batch"], r["dtype"]) for r in rows["forward_b256"]] == [
        (b, d) for b in (1, 2) for d in ("float32", "tf32", "bfloat16")]
    assert all(r["d_score"] == 0 for r in rows["forward_b256"] if r["dtype"] == "tf32")
    assert [(r["batch"], r["path"]) for r in rows["tracker"]] == [
        (b, f"tracker, {c} crop") for b in (1, 2) for c in ("host", "device")]
    assert all(r["fps"] > 0 for r in rows["tracker"])
    assert [(r["batch"], r["dtype"], r["remat"]) for r in rows["train"]] == [(2, "float32", "none")]
    assert [(r["batch"], r["remat"]) for r in rows["train_remat"]] == [(2, "block")]
    assert all(r["temp_mb"] > 0 for r in rows["train"] + rows["train_remat"])
    markdown = (tmp_path / "accelerator.md").read_text()
    for header in ("| config | B | attention | dtype | compile s | first call s | median ms |",
                   "| config | model | path | B | median ms/step | frames/s | bare forward ms | overhead |",
                   "| config | batch/device | devices | dtype | remat | compile s | step ms | samples/s | peak MB | "
                   "temp MB | temp MB per added sample |"):
        assert header in markdown


def test_a_part_out_of_time_is_reported_and_the_next_runs(tmp_path):
    """A command past its budget is killed and reported as a timeout; later commands of the part are skipped,
    the next part runs; a failing command's last line is the note."""
    slow = accelerator.Part("slow", 7, [[sys.executable, "-c", "import time; time.sleep(30)"],
                                        [sys.executable, "-c", "print('never')"]])
    failing = accelerator.Part("failing", 30, [[sys.executable, "-c", "raise SystemExit('bad input: frame 7')"]])
    with open(tmp_path / "log", "w") as log:
        deadline = accelerator.time.perf_counter() + 60
        results = [accelerator.run_part(part, deadline, 0, log) for part in (slow, failing)]
    assert results[0]["status"] == "timeout" and len(results[0]["outputs"]) == 1
    assert results[0]["seconds"] < 15
    assert results[1]["status"] == "failed" and "bad input: frame 7" in results[1]["note"]
    accelerator.write_report(tmp_path, results, dict(mode="test", budget_s=60, commit="x", started="now"))
    assert "| slow | timeout |" in (tmp_path / "accelerator.md").read_text()


def test_junit_summary_counts_failures():
    xml = ('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1" time="2.5">'
           '<testcase classname="tests.a" name="ok"/><testcase classname="tests.a" name="bad"><failure/></testcase>'
           '<testcase classname="tests.a" name="skip"><skipped/></testcase></testsuite></testsuites>')
    assert accelerator.junit_summary(xml) == dict(tests=3, failures=1, errors=0, skipped=1, seconds=2.5,
                                                  failed=["tests.a::bad"])
