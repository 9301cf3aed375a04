#!/usr/bin/env bash
# The demo: installs what it needs, then runs `streamer demo` (embedded broker,
# synthetic live streams, shipped model). Extra arguments go to `streamer demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec .venv/bin/streamer demo "$@"
