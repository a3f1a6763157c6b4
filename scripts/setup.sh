#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with its test extras.
# torch is pinned to the CPU build first so that pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
python -m pip install -q -e clients/python  # the typed API client (its own distribution), used by `occlutrace submit`
