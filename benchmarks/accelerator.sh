#!/usr/bin/env bash
# One command for every accelerator number (benchmarks/accelerator.py; its --help lists the options).
#   bash benchmarks/accelerator.sh            # on a GPU machine, under 8 minutes; report in $OUT or accelerator_out/
#   bash benchmarks/accelerator.sh --dry-run  # the same parts on the CPU with the tiny GRM (CI runs this)
# Python packages the machine lacks travel as wheels in .whl/ (prepared here by benchmarks/prepare_wheels.sh); they
# are installed into a temporary folder first, only where an import is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "ml_collections is missing and .whl/ holds no wheels: run benchmarks/prepare_wheels.sh first" >&2
    exit 1
  fi
fi
exec "$PY" benchmarks/accelerator.py --python "$PY" "$@"
