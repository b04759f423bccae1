"""``python -m grm_jax.compare``: run the JAX GRM on the inputs of a reference file made with the official code and
print, per output and per division layer, max abs / max rel error and decision agreement.

Reference file (``.npz``; the layout of ``tests/fixtures/official/grm_tiny/outputs.npz``):

* inputs: ``template`` (B,3,Ht,Wt) and ``search`` (B,3,Hs,Ws) ImageNet-normalised NCHW float32, optionally
  ``template_mask`` (B,Nz) and ``search_box`` (B,4) normalised x1,y1,w,h (for the losses);
* eval outputs per threshold tag (``t0`` = 0, ``t0p4`` = 0.4, i.e. ``t`` + the value with ``.`` → ``p``):
  ``eval_{tag}_{pred_boxes,score_map,size_map,offset_map,backbone_out,divide_logp,decisions}``;
* train outputs (optional): ``train_gumbel_noise`` (L−1,B,Ns,2) and ``train_{...}`` as above plus
  ``train_decisions_onehot``, ``train_status_Ls_{total,giou,l1,loc}``, ``train_status_IoU``.

Exit status 1 when an output's max abs error exceeds ``--atol``, a loss term's relative error ``--rtol``, or a
decision differs; 2 when the inputs cannot be read.

``python -m grm_jax.compare trajectory --config CONFIG --reference trajectory.npz``: replay a recorded run of the
official trainer (:mod:`grm_jax.train.trajectory`; the file format is in docs/comparison.md) through this package's
training step and print a per-step table (loss terms, pre-clip gradient norm, learning rates, parameter norms,
relative errors) and the final-state errors; exit status 1 past the tolerances, 2 when the file cannot be read.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys

import jax.numpy as jnp
import numpy as np
from absl import flags

from grm_jax import checkpoints, cli, losses
from grm_jax.config import load_config_file
from grm_jax.convert.official import official_to_variables
from grm_jax.models import build_model, to_official_layout
from grm_jax.train import trajectory

MAPS = ("pred_boxes", "score_map", "size_map", "offset_map", "backbone_out")


@dataclasses.dataclass
class Row:
    """One line of the comparison table."""

    mode: str
    output: str
    layer: str
    max_abs: float
    max_rel: float
    agreement: float | None = None  # fraction of equal decisions, for decision rows
    relative: bool = False  # loss terms are judged by relative error

    def ok(self, atol: float, rtol: float) -> bool:
        if self.agreement is not None:
            return self.agreement == 1.0
        if self.relative:
            return self.max_rel <= rtol
        return self.max_abs <= atol


def _errors(ours, ref) -> tuple[float, float]:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(ours - ref)
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    return float(diff.max()), float(rel.max())


def _tag_threshold(tag: str) -> float:
    return float(tag[1:].replace("p", "."))


def _layer_rows(mode, name, ours, ref):
    rows = []
    for layer in range(ref.shape[0]):
        if name == "decisions":
            agreement = float(np.mean(np.asarray(ours[layer]) == ref[layer]))
            rows.append(Row(mode, name, str(layer + 1), *_errors(ours[layer], ref[layer]), agreement))
        else:
            rows.append(Row(mode, name, str(layer + 1), *_errors(ours[layer], ref[layer])))
    return rows


def compare(model, variables, reference: dict) -> list[Row]:
    """Every comparison the reference file allows, as table rows."""
    z = jnp.asarray(reference["template"].transpose(0, 2, 3, 1))
    x = jnp.asarray(reference["search"].transpose(0, 2, 3, 1))
    mask = jnp.asarray(reference["template_mask"]) if "template_mask" in reference else None
    rows = []
    tags = sorted({m.group(1) for k in reference if (m := re.match(r"eval_(t[0-9p]+)_", k))})
    for tag in tags:
        out = to_official_layout(model.apply(variables, z, x, mask, threshold=_tag_threshold(tag)))
        mode = f"eval τ={_tag_threshold(tag):g}"
        for name in MAPS:
            if f"eval_{tag}_{name}" in reference:
                rows.append(Row(mode, name, "-", *_errors(out[name], reference[f"eval_{tag}_{name}"])))
        for name in ("divide_logp", "decisions"):
            if f"eval_{tag}_{name}" in reference:
                rows += _layer_rows(mode, name, out[name], reference[f"eval_{tag}_{name}"])

    if "train_gumbel_noise" in reference:
        model = model.clone(config=dataclasses.replace(model.config, drop_path_rate=0.0))  # recorded without
        out, _ = model.apply(variables, z, x, mask, train=True, mutable=["batch_stats"],
                             gumbel_noise=jnp.asarray(reference["train_gumbel_noise"]))
        if "search_box" in reference:
            _, status = losses.grm_loss(out["pred_boxes"], out["score_map"], jnp.asarray(reference["search_box"]),
                                        search_size=model.config.search_size)
            for key, value in status.items():
                ref_key = "train_status_" + key.replace("/", "_")
                if ref_key in reference:
                    rows.append(Row("train", key, "-", *_errors(value, reference[ref_key]), relative=True))
        out = to_official_layout(out)
        for name in MAPS:
            if f"train_{name}" in reference:
                rows.append(Row("train", name, "-", *_errors(out[name], reference[f"train_{name}"])))
        if "train_divide_logp" in reference:
            rows += _layer_rows("train", "divide_logp", out["divide_logp"], reference["train_divide_logp"])
        if "train_decisions_onehot" in reference:
            rows += _layer_rows("train", "decisions", out["decisions"],
                                reference["train_decisions_onehot"].argmax(-1))
    return rows


def format_table(rows: list[Row], atol: float, rtol: float) -> str:
    lines = [f"{'mode':<12} {'output':<14} {'layer':>5} {'max abs':>10} {'max rel':>10} {'agree':>7}  ok",
             "-" * 66]
    for r in rows:
        agree = f"{100 * r.agreement:6.2f}%" if r.agreement is not None else ""
        lines.append(f"{r.mode:<12} {r.output:<14} {r.layer:>5} {r.max_abs:10.2e} {r.max_rel:10.2e} {agree:>7}  "
                     f"{'yes' if r.ok(atol, rtol) else 'NO'}")
    return "\n".join(lines)


def _load(fv: flags.FlagValues):
    path = pathlib.Path(fv.checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (an Orbax directory or an official .pth / .pth.tar)")
    if path.is_dir():
        variables, stored_config = checkpoints.load_variables(path)
        config = load_config_file(fv.config) if fv.config else stored_config
    else:
        if not fv.config:
            raise ValueError("--config is needed with a PyTorch checkpoint file")
        config = load_config_file(fv.config)
        variables = official_to_variables(path, config)
    return build_model(config), variables


def _unreadable(err: Exception) -> None:
    """Inputs that cannot be read: one line, exit status 2 (1 means "outside the tolerances")."""
    cli.fail(cli.one_line(err), cli.EXIT_USAGE)


def _trajectory_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "the recorded model's config, e.g. configs/grm.py:tiny", required=True,
                        flag_values=fv)
    flags.DEFINE_string("reference", None, "trajectory.npz (meta.json beside it)", required=True, flag_values=fv)


def _trajectory(fv: flags.FlagValues, args: list[str]) -> int:
    """``python -m grm_jax.compare trajectory ...``."""
    cli.no_arguments(args)
    try:
        config = load_config_file(fv.config)
        recorded = trajectory.load(fv.reference)
        result = trajectory.compare(trajectory.replay(config, recorded), recorded)
    except (ValueError, OSError) as err:
        _unreadable(err)
    print(trajectory.format_report(result))
    return 0 if result["final"]["ok"] else 1


def _compare_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "configs/<name>.py[:arg]; default: the one recorded in the checkpoint",
                        flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "Orbax checkpoint directory or official .pth[.tar]", required=True,
                        flag_values=fv)
    flags.DEFINE_string("reference", None, "reference .npz produced with the official code", required=True,
                        flag_values=fv)
    flags.DEFINE_float("atol", 1e-4, "largest max-abs error accepted for outputs", flag_values=fv)
    flags.DEFINE_float("rtol", 1e-4, "largest relative error accepted for loss terms", flag_values=fv)


def _compare(fv: flags.FlagValues, args: list[str]) -> int:
    """``python -m grm_jax.compare ...``: the table and 1 if a row is outside the tolerances."""
    cli.no_arguments(args)
    try:
        model, variables = _load(fv)
        reference = dict(np.load(fv.reference))
    except (ValueError, OSError, RuntimeError) as err:
        _unreadable(err)
    rows = compare(model, variables, reference)
    print(format_table(rows, fv.atol, fv.rtol))
    failed = [r for r in rows if not r.ok(fv.atol, fv.rtol)]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} comparisons within tolerance "
          f"(atol {fv.atol:g}, loss rtol {fv.rtol:g})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.compare [trajectory] [flags]`` or ``grm-compare ...`` (``argv`` like ``sys.argv``;
    ``None``: ``sys.argv``)."""
    argv = list(sys.argv if argv is None else argv)
    if argv[1:2] == ["trajectory"]:
        return cli.call([f"{argv[0]} trajectory", *argv[2:]], _trajectory_flags, _trajectory,
                        trajectory.__doc__.splitlines()[0])
    return cli.call(argv, _compare_flags, _compare, __doc__)


if __name__ == "__main__":
    sys.exit(main())
