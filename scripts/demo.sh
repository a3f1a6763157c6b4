#!/usr/bin/env bash
# One command: set up .venv and align every bundled sample case on a local Ray into ./out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec occlutrace batch samples -o out "$@"
