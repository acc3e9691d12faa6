#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine: system packages (when root), a venv, pytest.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages="libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils ffmpeg"
missing=$(for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "note: missing system packages (live-capture tests will skip): $missing" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest "$@"
