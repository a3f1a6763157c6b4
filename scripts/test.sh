#!/usr/bin/env bash
# One command: set up .venv and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -q -ra "$@"
