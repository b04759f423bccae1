"""``python -m grm_jax.convert``: official PyTorch checkpoints ↔ grm_jax Orbax checkpoints.

  to-orbax       GRM .pth / .pth.tar / .safetensors → Orbax checkpoint (config recorded beside the weights)
  to-torch       Orbax checkpoint → official state dict (.pth loadable with strict=True, or .safetensors)
  init-backbone  fresh GRM + backbone from MAE / DeiT ImageNet weights (pos_embed_x/z by PyTorch bicubic)

Examples::

  python -m grm_jax.convert to-orbax --config configs/grm.py:B/256 --input GRM_ep0300.pth.tar --output ckpt/grm
  python -m grm_jax.convert to-torch --checkpoint ckpt/grm --output GRM_from_jax.pth
  python -m grm_jax.convert init-backbone --config configs/grm.py:B/256 \\
      --pretrained mae_pretrain_vit_base.pth --output ckpt/grm_init
"""

from __future__ import annotations

import argparse
import sys

from grm_jax import checkpoints
from grm_jax.config import load_config_file
from grm_jax.convert.official import init_variables, load_pretrained_backbone, official_to_variables, write_state_dict


def _to_orbax(args):
    config = load_config_file(args.config)
    variables = official_to_variables(args.input, config)
    step_dir = checkpoints.save_variables(args.output, variables, config, step=args.step)
    print(f"wrote {step_dir} ({config.model.backbone}, search {config.model.search_size} px)")


def _to_torch(args):
    variables, _ = checkpoints.load_variables(args.checkpoint, step=args.step)
    path = write_state_dict(variables, args.output)
    print(f"wrote {path}")


def _init_backbone(args):
    config = load_config_file(args.config)
    variables, report = load_pretrained_backbone(init_variables(config, args.seed), args.pretrained, config,
                                                 patch_start_index=args.patch_start_index)
    step_dir = checkpoints.save_variables(args.output, variables, config, step=0)
    print(f"loaded {len(report.loaded)} backbone entries, ignored {report.ignored}, "
          f"patch_start_index {report.patch_start_index}; division MLPs and head fresh; wrote {step_dir}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grm_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("to-orbax", help="official GRM checkpoint → Orbax checkpoint")
    p.add_argument("--config", required=True, help="configs/<name>.py[:arg] the checkpoint belongs to")
    p.add_argument("--input", required=True, help=".pth, .pth.tar (with 'net') or .safetensors")
    p.add_argument("--output", required=True, help="Orbax checkpoint directory")
    p.add_argument("--step", type=int, default=0)
    p.set_defaults(run=_to_orbax)
    p = sub.add_parser("to-torch", help="Orbax checkpoint → official state dict")
    p.add_argument("--checkpoint", required=True, help="Orbax checkpoint directory")
    p.add_argument("--output", required=True, help=".pth (torch zip format) or .safetensors")
    p.add_argument("--step", type=int, default=None, help="default: the latest")
    p.set_defaults(run=_to_torch)
    p = sub.add_parser("init-backbone", help="fresh GRM with an ImageNet-pretrained backbone")
    p.add_argument("--config", required=True)
    p.add_argument("--pretrained", required=True, help="mae_pretrain_vit_{base,large}.pth or a DeiT-B file")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch_start_index", type=int, default=None, help="default: from the file name (DeiT "
                   "distilled: 2, else 1)")
    p.set_defaults(run=_init_backbone)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
