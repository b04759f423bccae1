#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the pure-Python wheels that the lent GPU machines' image lacks, for its
# Python 3.12; benchmarks/accelerator.sh installs them there. The image has jax, flax, optax, orbax-checkpoint,
# numpy, opencv-python-headless, absl-py, PyYAML, tqdm, matplotlib, pytest and pytest-timeout (the device tool's
# package list); the benchmarks need ml-collections besides (grain, tensorflow-datasets and tensorboardX are only
# imported by the data pipeline and the training loop's logger, which no benchmark uses).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
