#!/usr/bin/env bash
# Creates .venv/ (once), installs requirements.txt into it at the exact versions of
# requirements.lock, then this repository editable (`pip install -e . --no-deps`, pyproject.toml:
# the package dev/ and its gpt2-* commands, so `python -m dev.sample` works from any folder).
# Sourced by dev/main.sh and dev/test.sh; safe to run again: it installs only when
# requirements.txt, requirements.lock or pyproject.toml changed since the last install (a stamp
# in .venv records their hash).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtual environment .venv/"
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
want="$(cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat .venv/.requirements-installed 2>/dev/null)" != "$want" ]; then
  echo "setup: installing requirements.txt at the versions of requirements.lock into .venv/"
  python -m pip install -q -r requirements.txt -c requirements.lock
  echo "setup: installing this repository editable into .venv/ (pip install -e . --no-deps)"
  python -m pip install -q -e . --no-deps
  echo "$want" > .venv/.requirements-installed
fi
echo "setup: python $(python -c 'import sys; print(sys.version.split()[0])'), torch $(python -c 'import torch; print(torch.__version__)')"
