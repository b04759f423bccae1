"""Serialise the tracker with ``jax.export``: an artefact that tracks with nothing but jax and numpy.

  python -m grm_jax.export --config configs/grm_tiny_synthetic.py --checkpoint runs/demo --output runs/demo/export
  python -c "import sys; sys.path.insert(0, 'runs/demo/export'); from export_runtime import ExportedTracker; ..."

Two functions are exported, for CPU and GPU (``platforms=('cpu', 'cuda')``) with the batch size ``b`` symbolic
(and the frame size ``h × w`` too unless ``--frame_size H,W`` fixes it):

* ``prepare(frames (b,h,w,3) uint8, boxes (b,4) float32 x,y,w,h) → z (b,Ht,Wt,3), template_mask (b,Nz)``: the
  template crop around the initial box on the device (:mod:`grm_jax.track.device_crop`), ImageNet-normalised, and
  the template box mask (docs/model.md#template-box-mask);
* ``track(variables, z, template_mask, frames (b,h,w,3) uint8, state (b,4) float32, threshold ()) → outputs``:
  one device-crop step of the Python tracker — device crop around ``state``, GRM forward, Hann window, decode,
  × search size / rf — returning the crop-pixel box, resize factors, maps, token decisions and the search crop;
  the runtime maps back and clips in float64 on the host, as the Python tracker does.

Both programs are the Python tracker's own device-crop functions (``Tracker`` with ``crop='device'``:
:func:`grm_jax.track.tracker.device_template_fn` and :func:`~grm_jax.track.tracker.device_track_fn`), so the
exported tracker gives the Python tracker's boxes bit for bit on the same backend (``tests/test_export.py``).
The host-crop tracker (OpenCV, the official path) differs from both by the device crop's rounding (crops
identical when shrinking, within a grey level when enlarging; boxes 7.3e-5 px apart on the fixture sequence).

The variables are an argument (the serialised programs stay small) and are saved beside as ``variables.npz``
(keys ``params/backbone/...``). The output folder holds ``prepare.jax``, ``track.jax``, ``variables.npz``,
``meta.json`` (sizes, factors, threshold, platforms) and a copy of :mod:`grm_jax.export_runtime`, the loader.
Serialising (and loading) needs the ``flatbuffers`` package (jax's optional dependency for ``jax.export``).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax import export

from grm_jax import cli
from grm_jax.checkpoints import load_checkpoint_variables
from grm_jax.config import check_threshold, validate
from grm_jax.models import build_model
from grm_jax.track.tracker import TrackerParams, device_template_fn, device_track_fn
from grm_jax.track.window import hann2d

FILES = ("prepare.jax", "track.jax", "variables.npz", "meta.json", "export_runtime.py")


def make_prepare_fn(model, params: TrackerParams):
    """``(frames, boxes) → (z, template_mask)``: the Python tracker's device-crop initialisation itself
    (:func:`grm_jax.track.tracker.device_template_fn`)."""
    return device_template_fn(model, params.template_factor, params.template_size)


def make_track_fn(model, params: TrackerParams):
    """``(variables, z, template_mask, frames, state, threshold) → outputs``: the Python tracker's device-crop
    step itself (:func:`grm_jax.track.tracker.device_track_fn`), so that both run the same program."""
    window = hann2d(params.search_size // model.config.patch_size)
    return device_track_fn(model, window, params.search_factor, params.search_size)


def plain_variables(variables) -> dict:
    """Variables as nested plain dicts of NumPy arrays (the pytree the exported ``track`` expects)."""
    if hasattr(variables, "items"):
        return {str(k): plain_variables(v) for k, v in variables.items()}
    return np.asarray(variables)


def flatten_variables(variables: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict → {'params/backbone/…/kernel': array} (the ``variables.npz`` keys)."""
    flat = {}
    for key, value in variables.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_variables(value, name + "/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def export_tracker(model, variables, params: TrackerParams, frame_size: tuple[int, int] | None = None,
                   platforms=("cpu", "cuda")) -> tuple[export.Exported, export.Exported, dict]:
    """``(prepare, track, variables)`` exported for ``platforms``; batch symbolic, frame size symbolic unless
    ``frame_size`` = (H, W)."""
    if params.size_update != 1.0:
        raise ValueError(f"config.test.size_update = {params.size_update}: the exported runtime applies the official "
                         "size update (1.0); export with size_update = 1")
    variables = plain_variables(variables)
    b, h, w = export.symbolic_shape("b, h, w")
    if frame_size is not None:
        h, w = (int(v) for v in frame_size)
    t = params.template_size
    nz = (t // model.config.patch_size) ** 2
    f32 = jnp.float32
    frames = jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8)
    boxes = jax.ShapeDtypeStruct((b, 4), f32)
    prepare = export.export(jax.jit(make_prepare_fn(model, params)), platforms=platforms)(frames, boxes)
    var_spec = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), variables)
    track = export.export(jax.jit(make_track_fn(model, params)), platforms=platforms)(
        var_spec, jax.ShapeDtypeStruct((b, t, t, 3), f32), jax.ShapeDtypeStruct((b, nz), f32), frames, boxes,
        jax.ShapeDtypeStruct((), f32))
    return prepare, track, variables


def save_artefact(out_dir, model, variables, params: TrackerParams, frame_size=None, platforms=("cpu", "cuda"),
                  extra_meta: dict | None = None) -> pathlib.Path:
    """Export and write the artefact folder (:data:`FILES`); returns its path."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare, track, variables = export_tracker(model, variables, params, frame_size, platforms)
    (out_dir / "prepare.jax").write_bytes(prepare.serialize())
    (out_dir / "track.jax").write_bytes(track.serialize())
    np.savez(out_dir / "variables.npz", **flatten_variables(variables))
    meta = dict(template_factor=params.template_factor, template_size=params.template_size,
                search_factor=params.search_factor, search_size=params.search_size, threshold=params.threshold,
                patch_size=model.config.patch_size, division_layers=model.config.depth - 1,
                frame_size=list(frame_size) if frame_size else None, platforms=list(platforms),
                jax_version=jax.__version__, **(extra_meta or {}))
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.copyfile(pathlib.Path(__file__).with_name("export_runtime.py"), out_dir / "export_runtime.py")
    return out_dir


def _size(path: pathlib.Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


DEFAULT_CONFIG = "configs/grm_tiny_synthetic.py"  # relative to the repository root


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides ``--config`` (and its overrides) and ``--verbosity``."""
    flags.DEFINE_string("checkpoint", "runs/demo", "Orbax checkpoint / training workdir / .pth", flag_values=fv)
    flags.DEFINE_string("output", None, "artefact folder (default: <checkpoint>/export)", flag_values=fv)
    flags.DEFINE_string("frame_size", None, "H,W to fix the frame size (default: symbolic)", flag_values=fv)
    flags.DEFINE_string("dataset", "synthetic", "dataset whose division threshold is the default", flag_values=fv)
    flags.DEFINE_float("threshold", None, "default division threshold stored in meta.json", flag_values=fv)
    flags.DEFINE_list("platforms", ["cpu", "cuda"], "platforms to lower for", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Exports the checkpoint's tracker as the flags say."""
    cli.no_arguments(args)
    config = fv.config
    validate(config)
    if fv.threshold is not None:
        check_threshold(fv.threshold, "--threshold")
    checkpoint = pathlib.Path(fv.checkpoint)
    variables = load_checkpoint_variables(checkpoint, config, cli.config_given(fv))
    params = TrackerParams.from_config(config, fv.dataset, crop="device", threshold=fv.threshold)
    frame_size = tuple(int(v) for v in fv.frame_size.split(",")) if fv.frame_size else None
    out = fv.output or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "export"
    path = save_artefact(out, build_model(config), variables, params, frame_size, tuple(fv.platforms),
                         dict(checkpoint=str(checkpoint), dataset=fv.dataset))
    print(f"exported tracker ({', '.join(fv.platforms)}; batch symbolic, frame "
          f"{'x'.join(map(str, frame_size)) if frame_size else 'size symbolic'}) to {path}:")
    for name in FILES:
        print(f"  {name}  {_size(path / name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.export [flags]`` or ``grm-export [flags]`` (``argv`` like ``sys.argv``; ``None``:
    ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__, config=DEFAULT_CONFIG, verbosity=True)


if __name__ == "__main__":
    sys.exit(main())
