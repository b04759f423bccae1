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

import functools
import sys

from absl import flags

from grm_jax import checkpoints, cli
from grm_jax.config import load_config_file
from grm_jax.convert.official import init_variables, load_pretrained_backbone, official_to_variables, write_state_dict


def _to_orbax_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "configs/<name>.py[:arg] the checkpoint belongs to", required=True,
                        flag_values=fv)
    flags.DEFINE_string("input", None, ".pth, .pth.tar (with 'net') or .safetensors", required=True, flag_values=fv)
    flags.DEFINE_string("output", None, "Orbax checkpoint directory", required=True, flag_values=fv)
    flags.DEFINE_integer("step", 0, "checkpoint step", flag_values=fv)


def _to_orbax(fv: flags.FlagValues, args: list[str]) -> None:
    cli.no_arguments(args)
    config = load_config_file(fv.config)
    variables = official_to_variables(fv.input, config)
    step_dir = checkpoints.save_variables(fv.output, variables, config, step=fv.step)
    print(f"wrote {step_dir} ({config.model.backbone}, search {config.model.search_size} px)")


def _to_torch_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "Orbax checkpoint directory", required=True, flag_values=fv)
    flags.DEFINE_string("output", None, ".pth (torch zip format) or .safetensors", required=True, flag_values=fv)
    flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)", flag_values=fv)


def _to_torch(fv: flags.FlagValues, args: list[str]) -> None:
    cli.no_arguments(args)
    variables, _ = checkpoints.load_variables(fv.checkpoint, step=fv.step)
    path = write_state_dict(variables, fv.output)
    print(f"wrote {path}")


def _init_backbone_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("config", None, "configs/<name>.py[:arg] of the model", required=True, flag_values=fv)
    flags.DEFINE_string("pretrained", None, "mae_pretrain_vit_{base,large}.pth or a DeiT-B file", required=True,
                        flag_values=fv)
    flags.DEFINE_string("output", None, "Orbax checkpoint directory", required=True, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "seed of the fresh parameters", flag_values=fv)
    flags.DEFINE_integer("patch_start_index", None, "default: from the file name (DeiT distilled: 2, else 1)",
                         flag_values=fv)


def _init_backbone(fv: flags.FlagValues, args: list[str]) -> None:
    cli.no_arguments(args)
    config = load_config_file(fv.config)
    variables, report = load_pretrained_backbone(init_variables(config, fv.seed), fv.pretrained, config,
                                                 patch_start_index=fv.patch_start_index)
    step_dir = checkpoints.save_variables(fv.output, variables, config, step=0)
    print(f"loaded {len(report.loaded)} backbone entries, ignored {report.ignored}, "
          f"patch_start_index {report.patch_start_index}; division MLPs and head fresh; wrote {step_dir}")


#: Subcommand → (its flags, what it does, its help line).
COMMANDS = {
    "to-orbax": (_to_orbax_flags, _to_orbax, "official GRM checkpoint → Orbax checkpoint"),
    "to-torch": (_to_torch_flags, _to_torch, "Orbax checkpoint → official state dict"),
    "init-backbone": (_init_backbone_flags, _init_backbone, "fresh GRM with an ImageNet-pretrained backbone"),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.convert COMMAND [flags]`` or ``grm-convert COMMAND [flags]`` (``argv`` like
    ``sys.argv``; ``None``: ``sys.argv``)."""
    commands = {name: functools.partial(cli.call, define=define, body=body, doc=f"{name}: {line}\n\n{__doc__}")
                for name, (define, body, line) in COMMANDS.items()}
    return cli.dispatch(argv, commands, __doc__)


if __name__ == "__main__":
    sys.exit(main())
