#!/usr/bin/env bash
# Creates .venv/ (once) and installs requirements.txt into it. Sourced by
# dev/main.sh and dev/test.sh; safe to run again (pip skips what is there).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtual environment .venv/"
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import numpy, torch, tiktoken, transformers, pytest, tqdm, matplotlib, scipy_openblas32" 2>/dev/null; then
  echo "setup: installing requirements.txt into .venv/"
  python -m pip install -q -r requirements.txt
fi
echo "setup: python $(python -c 'import sys; print(sys.version.split()[0])'), torch $(python -c 'import torch; print(torch.__version__)')"
