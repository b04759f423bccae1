"""Every script in benchmarks/ has ``main(argv)`` (absl flags through grm_jax.cli), callable from Python."""

from __future__ import annotations

import importlib
import json
import pathlib
import sys

import jax
import numpy as np
import pytest

from grm_jax.config import load_config_file
from grm_jax.flops import matmul_flops, official_forward_flops
from grm_jax.models import build_model, example_inputs, host_init

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_flag_errors(name, capsys):
    script = importlib.import_module(name)
    assert script.main([f"{name}.py", "--help"]) == 0
    assert script.__doc__.strip().splitlines()[0] in capsys.readouterr().out
    assert script.main([f"{name}.py", "--no_such_flag"]) == 2
    assert capsys.readouterr().err.strip() == "error: Unknown command line flag 'no_such_flag' (see --help)"
    assert script.main([f"{name}.py", "extra"]) == 2


def test_precision_twice_in_one_process(tmp_path, capsys):
    """Two calls with other ``--precisions`` and ``--json``: each measures and writes what its own flags say."""
    precision = importlib.import_module("precision")
    for name in ("highest", "bfloat16"):
        assert precision.main(["precision.py", "--precisions", name, "--json", str(tmp_path / f"{name}.json")]) == 0
        rows = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
        assert {r["precision"] for r in rows} == {name}
    assert "| bfloat16 | 0.0 |" in capsys.readouterr().out


def test_accelerator_twice_in_one_process(tmp_path, capsys):
    """``--only env --dry-run`` into two folders, then an unknown part: a usage error (exit 2)."""
    accelerator = importlib.import_module("accelerator")
    for out in ("a", "b"):
        assert accelerator.main(["accelerator.py", "--dry-run", "--only", "env", "--out", str(tmp_path / out)]) == 0
        report = json.loads((tmp_path / out / "accelerator.json").read_text())
        assert [p["name"] for p in report["parts"]] == ["env"] and report["mode"] == "dry run, CPU"
    capsys.readouterr()
    assert accelerator.main(["accelerator.py", "--dry-run", "--only", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "--only: unknown part(s) ['nope']" in capsys.readouterr().err


def test_train_throughput_reports_the_matmul_share(tmp_path, capsys):
    """tiny, batch 1, two timed steps: the row carries GFLOP/s = 3 × the official forward's GFLOP × samples/s and its
    share of the reference matmul sampled after each timed step (the median of the samples; per step, the step's
    rate over the sample after it)."""
    throughput = importlib.import_module("train_throughput")
    out = tmp_path / "rows.json"
    assert throughput.main(["train_throughput.py", "--batches", "1", "--steps", "2", "--matmul-size", "256",
                            "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
    model = build_model(config)
    inputs = example_inputs(config, 1)
    variables = host_init(model, *inputs)
    gflop = official_forward_flops(model, variables, *inputs) / 1e9
    assert row["gflops"] == pytest.approx(3 * gflop * row["samples_s"], rel=1e-9)
    assert row["pct_matmul"] == pytest.approx(100 * row["gflops"] / row["matmul_gflops"], rel=1e-9)
    assert len(row["reference_samples"]) == len(row["step_times_ms"]) == 2
    assert row["matmul_gflops"] == pytest.approx(float(np.median(row["reference_samples"])), rel=1e-12)
    assert row["step_ms"] == pytest.approx(float(np.median(row["step_times_ms"])), rel=1e-12)
    for pct, step_ms, reference in zip(row["pct_matmul_steps"], row["step_times_ms"], row["reference_samples"]):
        assert pct == pytest.approx(100 * 3 * gflop / (step_ms / 1e3) / reference, rel=1e-9)  # batch 1, one device
    printed = capsys.readouterr().out
    assert "| GFLOP/s | matmul GF/s | % matmul | % matmul per step |" in printed
    shares = row["pct_matmul_steps"]
    assert (f"| {row['pct_matmul']:.0f} | {np.median(shares):.0f} ({min(shares):.0f}–{max(shares):.0f}) |"
            in printed)


def test_train_throughput_ceiling_counts_every_matmul_of_the_step(tmp_path):
    """The step's matmul equations, grouped, are all of its matmuls: Σ count · FLOPs equals the FLOPs counted over the
    whole traced step (forward, backward, division MLPs); the ceiling column is the step's matmul share with the
    step time replaced by the matmuls' own."""
    throughput = importlib.import_module("train_throughput")
    from grm_jax.train.loop import init_train_state
    from grm_jax.train.optimizer import make_optimizer
    from grm_jax.train.step import make_train_step

    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
    model = build_model(config)
    state = init_train_state(config, model, lambda p: make_optimizer(config, p, 10))
    step = make_train_step(model, make_optimizer(config, state.params, 10), config, 10, axis_name=None)
    m = config.model
    grid = (m.template_size // m.patch_size) ** 2
    batch = dict(template=np.zeros((1, m.template_size, m.template_size, 3), np.float32),
                 search=np.zeros((1, m.search_size, m.search_size, 3), np.float32),
                 template_mask=np.ones((1, grid), np.float32), search_anno=np.float32([[0.3, 0.3, 0.2, 0.2]]))
    args = (state, batch, jax.random.PRNGKey(0))
    groups = throughput.matmul_equations(step, *args)
    assert sum(count for _, count in groups) > len(groups)  # the blocks repeat their shapes

    def flops_of(eqn):
        return matmul_flops(lambda *xs: eqn.primitive.bind(*xs, **eqn.params),
                            *(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars))

    assert sum(count * flops_of(eqn) for eqn, count in groups) == matmul_flops(step, *args)

    out = tmp_path / "rows.json"
    assert throughput.main(["train_throughput.py", "--batches", "1", "--steps", "1", "--matmul-size", "256",
                            "--matmuls-alone", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["alone_ms"] > 0
    assert row["pct_ceiling"] == pytest.approx(row["pct_matmul"] * row["step_ms"] / row["alone_ms"], rel=1e-9)


def test_step_parts_replaces_each_part_in_the_traced_model_and_restores_it(tmp_path, capsys):
    """Inside ``replaced``, the model traced there computes something else (the replacement reaches the program);
    after it, the same model computes the base outputs again. ``main`` times base first, then the parts asked for,
    one step each per round, and refuses an unknown part."""
    parts = importlib.import_module("step_parts")

    config = load_config_file(f"{ROOT / 'configs' / 'grm.py'}:tiny")
    model = build_model(config)
    inputs = example_inputs(config, 2)
    variables = host_init(model, *inputs)
    boxes = lambda: np.asarray(model.apply(variables, *inputs)["pred_boxes"])  # noqa: E731
    base = boxes()
    assert set(parts.MODEL_REPLACEMENTS) == set(parts.PARTS) - {"no_optimizer"}  # that one replaces the optimizer
    for part in parts.MODEL_REPLACEMENTS:
        with parts.replaced({part}):
            assert np.max(np.abs(boxes() - base)) > 1e-4, part
    for module, name, replacement in parts.MODEL_REPLACEMENTS.values():  # each replacement undone
        assert getattr(module, name) is not replacement, name
    np.testing.assert_array_equal(boxes(), base)  # restored: the same program as before

    out = tmp_path / "rows.json"
    assert parts.main(["step_parts.py", "--rounds", "2", "--parts", "no_optimizer", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["base", "no_optimizer"]
    assert all(len(r["step_times_ms"]) == 2 for r in rows) and rows[0]["vs_base_ms"] == 0
    assert "| no_optimizer |" in capsys.readouterr().out
    assert parts.main(["step_parts.py", "--parts", "nope"]) == 2
    assert "--parts: unknown part(s) ['nope']" in capsys.readouterr().err
