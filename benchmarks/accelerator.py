"""Every GPU number the speed issue asks for, in one command with a time budget: parity, precision, forward,
tracker and train-step throughput, as one Markdown report and one JSON file.

    bash benchmarks/accelerator.sh                 # on the lent GPU machine (installs the carried wheels first)
    bash benchmarks/accelerator.sh --dry-run       # the same parts on the CPU with the tiny GRM (CI runs this)
    python benchmarks/accelerator.py --out DIR --budget 480 --only forward_b256,tracker

Each part runs in its own process (this one never imports JAX, so the GPU is free for the part that runs) under a
timeout: its own budget, cut to what is left of the whole budget minus a reserve for writing the report. A part
that fails or times out is reported with its error and the next one runs. The report is rewritten after every
part, so a run killed from outside still leaves the parts that finished. The slow parts come last.

Output (``--out``, default ``$OUT`` or ``accelerator_out/``): ``accelerator.md`` (status, environment, then one
table per part, with the columns of the CPU tables in ``benchmarks/README.md``), ``accelerator.json`` (the same
rows) and ``accelerator.log`` (every part's command and output).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))  # for grm_jax.cli, which imports no JAX

from absl import app, flags  # noqa: E402

from grm_jax import cli  # noqa: E402

# The parity tests that matter on another backend (forward, train pass and gradients, fused and bfloat16 paths,
# tracker runs), chosen to fit the GPU part's budget; the whole suite runs on the CPU in CI.
PARITY_TESTS = ["tests/models/test_grm.py::test_eval_matches_official",
                "tests/models/test_grm.py::test_train_outputs_match_official",
                "tests/models/test_grm.py::test_train_losses_match_official",
                "tests/models/test_grm.py::test_batchnorm_running_stats_match_official",
                "tests/models/test_grm.py::test_gradients_match_official",
                "tests/models/test_attention_paths.py::test_fused_matches_the_reference",
                "tests/models/test_attention_paths.py::test_bfloat16_forward_deviation",
                "tests/track/test_tracker.py::test_host_crop_tracker_reproduces_official_run",
                "tests/track/test_tracker.py::test_device_crop_tracks_close_to_host"]
# Numerical parts compile many small programs; XLA's GPU autotuning (timing candidate kernels for each matmul)
# costs more than 25 s per GRM-B/256 program on an H200 and changes no float32-highest result, so they skip it.
NO_AUTOTUNE = {"XLA_FLAGS": "--xla_gpu_autotune_level=0"}
ENV_SNIPPET = """
import json, platform, importlib.metadata as md
import jax
out = dict(python=platform.python_version(), jax=jax.__version__, backend=jax.default_backend(),
           devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()])
for name in ("jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections", "opencv-python-headless",
             "jax-cuda13-plugin", "jax-cuda12-plugin"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


@dataclasses.dataclass
class Part:
    """One measurement: ``commands`` run one after another, each writing its rows to the JSON path in ``{json}``."""

    name: str
    budget_s: float
    commands: list[list[str]]
    env: dict = dataclasses.field(default_factory=dict)


# Sizes of the real run and of the dry run (the same parts, the tiny GRM, a few iterations; CPU).
SIZES = {
    # b256_runs: one process per entry, so that batch 1 survives a timeout at batch 64.
    False: dict(b256="B/256", l320="L/320", b256_runs=("1", "64"), batch=64, l320_batches="1,32",
                tracker_batch=32, iters=20, warmup=3, frames=50, matmul=8192, train_batches="32,64", steps=10,
                train_dtype="bfloat16", parity=PARITY_TESTS),
    True: dict(b256="tiny", l320="tiny", b256_runs=("1,2",), batch=2, l320_batches="1", tracker_batch=2,
               iters=2, warmup=1, frames=3, matmul=256, train_batches="2", steps=1, parity=PARITY_TESTS[:1],
               # a bfloat16 train step of even the tiny GRM takes ~13 s on a 2-core CPU (its convolutions'
               # gradients); the dry run checks the plumbing in float32 (bfloat16 training: test_attention_paths)
               train_dtype="float32"),
}


# The budgets are the GPU run's. A dry run checks the plumbing on whatever CPU runs it: ~90 s on the faster 2-core
# CPUs, 3-4x that on a 2-core AMD EPYC without AVX-512 (2026-12-05), so its parts get this many times their budget.
DRY_RUN_SLACK = 4
DEFAULT_BUDGET_S = {False: 480.0, True: 1200.0}


def parts(dry_run: bool, python: str) -> list[Part]:
    """The parts in running order: what the targets need first, the slow and optional ones last (a dry run's
    budgets ``DRY_RUN_SLACK`` times the GPU run's)."""
    todo = _parts(dry_run, python)
    if dry_run:
        todo = [dataclasses.replace(p, budget_s=p.budget_s * DRY_RUN_SLACK) for p in todo]
    return todo


def _parts(dry_run: bool, python: str) -> list[Part]:
    s, py = SIZES[dry_run], [python]
    forward = py + [str(BENCH / "forward.py"), "--accuracy", "--iters", str(s["iters"]), "--warmup",
                    str(s["warmup"]), "--matmul-size", str(s["matmul"]), "--matmul-reference", "case",
                    "--json", "{json}"]
    tracker = py + [str(BENCH / "tracker.py"), "--config", s["b256"], "--frames", str(s["frames"]), "--warmup",
                    str(s["warmup"]), "--json", "{json}"]
    return [
        Part("env", 30, [py + ["-c", ENV_SNIPPET]] + ([] if dry_run else [["nvidia-smi", "-L"]])),
        Part("parity", 100, [py + ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", "{json}",
                                   *s["parity"]]],
             env=dict(NO_AUTOTUNE, JAX_DEFAULT_MATMUL_PRECISION="highest")),
        Part("precision", 30, [py + [str(BENCH / "precision.py"), "--json", "{json}"]], env=NO_AUTOTUNE),
        # float32 first: the reference of the accuracy columns; then the precisions a user would run.
        Part("forward_b256", 100, [forward + ["--configs", s["b256"], "--batches", b, "--attention", "masked",
                                              "--dtypes", "float32,tf32,bfloat16"] for b in s["b256_runs"]]),
        Part("tracker", 90, [tracker + ["--dtype", "tf32"],
                             tracker + ["--dtype", "bfloat16", "--attention", "fused", "--batch",
                                        str(s["tracker_batch"])]]),
        Part("train", 70, [py + [str(BENCH / "train_throughput.py"), "--configs", s["b256"], "--batches",
                                 s["train_batches"], "--steps", str(s["steps"]), "--dtype", s["train_dtype"],
                                 "--json", "{json}"]]),
        Part("forward_fused", 60, [forward + ["--configs", s["b256"], "--batches", f"1,{s['batch']}",
                                               "--attention", "masked,fused", "--dtypes", "bfloat16"]]),
        Part("forward_l320", 60, [forward + ["--configs", s["l320"], "--batches", s["l320_batches"],
                                              "--attention", "masked", "--dtypes", "tf32,bfloat16"]]),
        # last: per-block rematerialisation's memory and time (on CPU it saves nothing; benchmarks/README.md)
        Part("train_remat", 60, [py + [str(BENCH / "train_throughput.py"), "--configs", s["b256"], "--batches",
                                       s["train_batches"], "--steps", str(s["steps"]), "--dtype", s["train_dtype"],
                                       "--remat", "block", "--json", "{json}"]]),
    ]


# ------------------------------------------------------------------------------------------------ running


def run_part(part: Part, deadline: float, reserve_s: float, log) -> dict:
    """Run ``part``'s commands until done or out of time; returns its status and the rows of each command."""
    result = dict(name=part.name, status="ok", seconds=0.0, outputs=[], note="")
    start = time.perf_counter()
    stop_at = min(start + part.budget_s, deadline - reserve_s)
    for command in part.commands:
        left = stop_at - time.perf_counter()
        if left < 5:
            result.update(status="skipped", note=f"out of time before `{' '.join(command[-6:])}`")
            break
        with tempfile.TemporaryDirectory() as tmp:
            json_path = os.path.join(tmp, "rows")
            argv = [json_path if a == "{json}" else a for a in command]
            log.write(f"\n=== {part.name}: {' '.join(argv)}  (timeout {left:.0f} s)\n")
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1", **part.env)
            try:
                proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, timeout=left)
                output, code = proc.stdout, proc.returncode
            except subprocess.TimeoutExpired as err:
                output = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
                code = "timeout"
            except OSError as err:
                output, code = str(err), "not run"
            log.write(output)
            log.flush()
            rows = read_rows(json_path)
            result["outputs"].append(dict(command=argv, returncode=code, rows=rows, stdout=output[-4000:]))
            if code != 0:
                last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
                result.update(status="timeout" if code == "timeout" else "failed",
                              note=(result["note"] + " " if result["note"] else "") + f"exit {code}: {last[0][:300]}")
                if code == "timeout":
                    break
    result["seconds"] = time.perf_counter() - start
    return result


def read_rows(path: str):
    """The rows a command wrote: JSON, or a pytest JUnit XML summarised to counts and failed tests."""
    if not os.path.exists(path):
        return None
    text = pathlib.Path(path).read_text()
    if text.lstrip().startswith("<"):
        return junit_summary(text)
    return json.loads(text)


def junit_summary(xml_text: str) -> dict:
    """Counts and failed test names of a pytest JUnit XML report."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml_text)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return dict(tests=int(suite.get("tests", 0)), failures=int(suite.get("failures", 0)),
                errors=int(suite.get("errors", 0)), skipped=int(suite.get("skipped", 0)),
                seconds=float(suite.get("time", 0)), failed=failed)


# ------------------------------------------------------------------------------------------------ report


def table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def part_rows(result: dict) -> list:
    return [row for out in result["outputs"] if isinstance(out["rows"], dict) for row in out["rows"].get("rows", [])]


def render_part(result: dict) -> list[str]:
    """A part's Markdown table, with the CPU tables' columns."""
    name = result["name"]
    if name == "env":
        outs = [o["stdout"].strip() for o in result["outputs"]]
        return ["```"] + outs + ["```"]
    if name == "parity":
        rows = []
        for out in result["outputs"]:
            s = out["rows"]
            if s:
                rows.append([s["tests"], s["tests"] - s["failures"] - s["errors"] - s["skipped"], s["failures"],
                             s["errors"], s["skipped"], f"{s['seconds']:.0f}", "<br>".join(s["failed"]) or "–"])
        return ["Tests run with `JAX_DEFAULT_MATMUL_PRECISION=highest`.", ""] + \
            table(["tests", "passed", "failed", "errors", "skipped", "seconds", "failed tests"], rows)
    if name == "precision":
        return table(["precision", "threshold", "max Δscore", "max Δbox (normalised)", "max Δfeatures",
                      "Δdecisions"],
                     [[r["precision"], r["threshold"], f"{r['d_score']:.2g}", f"{r['d_box']:.2g}",
                       f"{r['d_features']:.2g}", r["flips"]] for r in part_rows(result)])
    if name.startswith("forward"):
        return table(["config", "B", "attention", "dtype", "compile s", "first call s", "median ms", "GFLOP/s",
                      "matmul GF/s", "% matmul", "max Δscore", "max Δbox px", "Δdecisions"],
                     [[r["config"], r["batch"], r["attention"], r["dtype"], f"{r['compile_s']:.1f}",
                       f"{r['first_s']:.1f}", f"{r['median_ms']:.2f}", f"{r['gfs']:.0f}", f"{r['mm']:.0f}",
                       f"{r['pct']:.0f}", f"{r.get('d_score', 0):.2g}", f"{r.get('d_box_px', 0):.2g}",
                       r.get("flips", "–")] for r in part_rows(result)])
    if name == "tracker":
        return table(["config", "model", "path", "B", "median ms/step", "frames/s", "bare forward ms", "overhead"],
                     [[r["config"], f"{r['attention']} {r['dtype']}", r["path"], r["batch"], f"{r['median']:.2f}",
                       f"{r['fps']:.0f}", f"{r['bare']:.2f}", f"{r['overhead']:+.1f} %"] for r in part_rows(result)])
    if name.startswith("train"):
        return table(["config", "batch/device", "devices", "dtype", "remat", "compile s", "step ms", "samples/s",
                      "peak MB", "temp MB", "temp MB per added sample"],
                     [[r["config"], r["batch"], r["devices"], r["dtype"], r.get("remat", "none"),
                       f"{r['compile_s']:.1f}", f"{r['step_ms']:.1f}", f"{r['samples_s']:.1f}", f"{r['peak_mb']:.0f}",
                       f"{r.get('temp_mb', float('nan')):.0f}", f"{r.get('temp_mb_per_sample', float('nan')):.0f}"]
                      for r in part_rows(result)])
    return []


def write_report(out_dir: pathlib.Path, results: list[dict], header: dict) -> None:
    lines = [f"# Accelerator report ({header['mode']})", "",
             f"{header['started']}; budget {header['budget_s']:.0f} s; commit {header['commit']}", ""]
    lines += table(["part", "status", "seconds", "note"],
                   [[r["name"], r["status"], f"{r['seconds']:.0f}", r["note"].replace("|", "\\|") or "–"]
                    for r in results])
    for result in results:
        lines += ["", f"## {result['name']}", ""] + render_part(result)
    (out_dir / "accelerator.md").write_text("\n".join(lines) + "\n")
    (out_dir / "accelerator.json").write_text(json.dumps(dict(header, parts=results), indent=1, default=str))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def define_flags(fv: flags.FlagValues) -> None:
    """The command line's flags."""
    flags.DEFINE_bool("dry-run", False, "tiny model on the CPU, a few iterations", flag_values=fv)
    flags.DEFINE_float("budget", None, f"seconds for the whole run (default {DEFAULT_BUDGET_S[False]:.0f}, "
                       f"dry run {DEFAULT_BUDGET_S[True]:.0f})", flag_values=fv)
    flags.DEFINE_float("reserve", 5.0, "seconds kept for writing the report", flag_values=fv)
    flags.DEFINE_string("out", None, "output folder (default $OUT, else accelerator_out/)", flag_values=fv)
    flags.DEFINE_string("only", None, "comma-separated part names to run", flag_values=fv)
    flags.DEFINE_string("python", sys.executable, "interpreter for the parts", flag_values=fv)


def run_parts(fv: flags.FlagValues, argv: list[str]) -> int:
    """Runs the parts within the budget and writes the report; 1 unless every part ended ok."""
    cli.no_arguments(argv)
    args = cli.namespace(fv)
    budget = args.budget or DEFAULT_BUDGET_S[args.dry_run]
    deadline = time.perf_counter() + budget
    out_dir = pathlib.Path(args.out or os.environ.get("OUT") or ROOT / "accelerator_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = parts(args.dry_run, args.python)
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {p.name for p in todo}
        if unknown:
            raise app.UsageError(f"--only: unknown part(s) {sorted(unknown)}; parts: {[p.name for p in todo]}")
        todo = [p for p in todo if p.name in names]
    cache = None
    if args.dry_run:  # the parts compile the same tiny programs again: share them (timings are not the point here)
        cache = tempfile.TemporaryDirectory(prefix="grm_jax_dry_run_xla_")
        os.environ.update(JAX_COMPILATION_CACHE_DIR=cache.name, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                          JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    header = dict(mode="dry run, CPU" if args.dry_run else "accelerator", budget_s=budget, commit=git_commit(),
                  started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    results = []
    with open(out_dir / "accelerator.log", "w") as log:
        for part in todo:
            print(f"[accelerator] {part.name} (budget {part.budget_s:.0f} s, "
                  f"{deadline - time.perf_counter():.0f} s left)", flush=True)
            result = run_part(part, deadline, args.reserve, log)
            results.append(result)
            print(f"[accelerator] {part.name}: {result['status']} in {result['seconds']:.0f} s "
                  f"{result['note']}", flush=True)
            write_report(out_dir, results, header)
    if cache is not None:
        cache.cleanup()
    print((out_dir / "accelerator.md").read_text())
    return 0 if all(r["status"] == "ok" for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/accelerator.py [flags]`` (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run_parts, __doc__)


if __name__ == "__main__":
    sys.exit(main())
