"""``python -m grm_jax.data.datasets NAME ROOT DATA_DIR [--split_file FILE]``: prepare a training dataset once.

NAME is a ``config.data.datasets`` name (``LASOT``, ``GOT10K_vot_train``, ``GOT10K_train``, ``COCO17``,
``TRACKINGNET``, ``SYNTHETIC``) or ``builder/config``; ROOT the dataset's folder in its official layout; DATA_DIR
where the prepared array_record files go (``config.data.data_dir``). Re-running reuses finished work; frames that
cannot be read are listed in the preparation report beside the data.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from grm_jax import cli
from grm_jax.data.datasets import REPORT_FILE, prepare_dataset


def define_flags(fv: flags.FlagValues) -> None:
    """The flags besides the positional NAME ROOT DATA_DIR."""
    flags.DEFINE_string("split_file", None, "GOT-10k vot / LaSOT train sequence list", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Prepares dataset NAME from ROOT into DATA_DIR (``args[1:]``)."""
    if len(args) != 4:
        raise app.UsageError(f"expected NAME ROOT DATA_DIR, got {len(args) - 1} arguments: {args[1:]}")
    name, root, data_dir = args[1:]
    kwargs = {"split_file": fv.split_file} if fv.split_file else {}
    synthetic = name.startswith("SYNTHETIC")
    if not synthetic and not (os.path.isdir(root) and os.listdir(root)):
        # checked before TFDS creates anything in DATA_DIR
        cli.fail(f"dataset folder {root} does not exist or is empty (the {name} data in its official layout goes "
                 f"there)", cli.EXIT_ERROR)
    try:
        builder = prepare_dataset(name, None if synthetic else root, data_dir, **kwargs)
    except KeyError as err:  # an unknown name: the message lists the known ones
        cli.fail(str(err.args[0] if err.args else err), cli.EXIT_ERROR)
    except AssertionError as err:  # TFDS reports a bad manual folder as AssertionError
        cli.fail(cli.one_line(err), cli.EXIT_ERROR)
    print(f"prepared {name} in {builder.data_dir} (problems, if any: {builder.data_dir}/{REPORT_FILE})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m grm_jax.data.datasets NAME ROOT DATA_DIR [--split_file FILE]`` or ``grm-datasets ...``
    (``argv`` like ``sys.argv``; ``None``: ``sys.argv``)."""
    return cli.call(argv, define_flags, run, __doc__)


if __name__ == "__main__":
    sys.exit(main())
