#!/usr/bin/env bash
# The test command: installs what it needs, then lint, types and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check streamer models tests
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
