#!/usr/bin/env bash
# Create (or reuse) the virtualenv at .venv and install kces with its test and DeepRobust extras.
# torch is pinned to 2.13.0 first: this machine has a local CPU build of exactly that release,
# any other spec pulls GBs of CUDA wheels. Safe to re-run: an existing .venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"
.venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip install torch==2.13.0
pip install -c "$constraints" -e ".[test,plot,deeprobust]"
# deeprobust's own requirements would replace torch with a CUDA build: install it without them.
.venv/bin/python -c "import deeprobust" 2>/dev/null || pip install --no-deps deeprobust==0.2.11
