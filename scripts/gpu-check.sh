#!/usr/bin/env bash
# On a machine with a CUDA GPU: the gpu-marked tests, then the benchmark on the GPU.
# Expects a CUDA build of torch in .venv (see the README's "With a GPU"); fails, rather
# than skipping, where torch sees no CUDA device. Writes bench-cuda.json (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else
    "gpu-check: torch " + torch.__version__ + " sees no CUDA device")'
.venv/bin/python -c 'import torch; print("gpu-check:", torch.cuda.get_device_name(0), "torch", torch.__version__)'
.venv/bin/python -m pytest -m gpu -rs tests
.venv/bin/python -m streamer bench --device cuda --json "${1:-bench-cuda.json}"
