#!/usr/bin/env bash
# One command: set up .venv, check lint, format and types, then run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# Fail fast: these take seconds, the suite about ten minutes. Config: [tool.ruff] and [tool.mypy] in pyproject.toml.
fail() { echo "scripts/test.sh: $1" >&2; exit 1; }
python -m ruff check . || fail "ruff check found lint errors (above); 'ruff check --fix .' mends those marked [*]"
python -m ruff format --check . || fail "ruff format --check: the files above are not formatted; run 'ruff format .'"
python -m mypy || fail "mypy found type errors (above)"
exec python -m pytest -q -ra "$@"
