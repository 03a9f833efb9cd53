#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set up .venv/ (requirements.lock's versions), build
# the trainers that can be built here, print the environment the results belong to (versions,
# CPU, OpenBLAS kernel), run pytest. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. dev/setup.sh
make -s train_gpt2
python -m dev.environment
python -m pytest -q tests "$@"
