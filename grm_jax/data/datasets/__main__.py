"""``python -m grm_jax.data.datasets NAME ROOT DATA_DIR [--split_file FILE]``: prepare a training dataset once.

NAME is a ``config.data.datasets`` name (``LASOT``, ``GOT10K_vot_train``, ``GOT10K_train``, ``COCO17``,
``TRACKINGNET``, ``SYNTHETIC``) or ``builder/config``; ROOT the dataset's folder in its official layout; DATA_DIR
where the prepared array_record files go (``config.data.data_dir``). Re-running reuses finished work; frames that
cannot be read are listed in the preparation report beside the data.
"""

from __future__ import annotations

import argparse
import os
import sys

from grm_jax.data.datasets import REPORT_FILE, prepare_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grm_jax.data.datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("root", help="dataset folder (ignored for SYNTHETIC)")
    parser.add_argument("data_dir")
    parser.add_argument("--split_file", default=None, help="GOT-10k vot / LaSOT train sequence list")
    args = parser.parse_args(argv)
    kwargs = {"split_file": args.split_file} if args.split_file else {}
    synthetic = args.name.startswith("SYNTHETIC")
    if not synthetic and not (os.path.isdir(args.root) and os.listdir(args.root)):
        # checked before TFDS creates anything in DATA_DIR
        print(f"error: dataset folder {args.root} does not exist or is empty (the {args.name} data in its official "
              f"layout goes there)", file=sys.stderr)
        return 1
    try:
        builder = prepare_dataset(args.name, None if synthetic else args.root,
                                  args.data_dir, **kwargs)
    except KeyError as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, AssertionError) as err:  # TFDS reports a bad manual folder as AssertionError
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"prepared {args.name} in {builder.data_dir} (problems, if any: {builder.data_dir}/{REPORT_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
