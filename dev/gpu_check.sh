#!/usr/bin/env bash
# dev/gpu_check.sh: the one command to run on a machine with an NVIDIA GPU. It builds the CUDA
# trainer for that GPU, runs the GPU tests (parity, training, resume across trainers, workbench
# checks, compute-sanitizer), the end-to-end benchmark against PyTorch, and every kernel
# workbench's benchmark, and writes everything it saw (nvidia-smi, date, commit, each command, its
# output and exit status) to one folder:
#   $OUT when set (the device tool's output folder), else dev/results/gpu_<date>_<gpu>/
# Files (8 at most): summary.md, nvidia-smi.txt, build.log, tests.log, bench_gpu.md,
# bench_gpu.json, bench_gpu.log, workbenches.log.
#
# Usage: bash dev/gpu_check.sh [all|tests|bench|workbenches]      (default: all)
# "all" runs the stages in that order within a time budget (GPU_CHECK_BUDGET seconds, default
# 560, so one call fits a 10-minute limit): a stage that would start past the budget is skipped
# and summary.md says so; run that stage alone in a second call. The exit status is 0 only if
# every stage that ran passed. Needs: nvcc, g++, make, nvidia-smi, and a Python with torch (CUDA),
# numpy, pytest and transformers ($PYTHON, else .venv/bin/python, else python3); no network.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
what="${1:-all}"
case "$what" in all|tests|bench|workbenches) ;; *) echo "usage: bash dev/gpu_check.sh [all|tests|bench|workbenches]" >&2; exit 2;; esac
budget="${GPU_CHECK_BUDGET:-560}"
SECONDS=0

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: nvidia-smi sees no GPU: dev/gpu_check.sh runs on a machine with an NVIDIA GPU" >&2
  exit 1
fi
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
slug="$(echo "$gpu" | tr -c 'A-Za-z0-9' '_' | sed 's/__*/_/g; s/_$//')"
out="${OUT:-$repo/dev/results/gpu_$(date +%Y%m%d_%H%M%S)_$slug}"
mkdir -p "$out"

# a Python with torch (CUDA build preferred), numpy, pytest, transformers
py=""
for cand in "${PYTHON:-}" "$repo/.venv/bin/python" python3; do
  [ -n "$cand" ] || continue
  command -v "$cand" >/dev/null 2>&1 || continue
  if "$cand" -c "import torch, numpy, pytest, transformers" 2>/dev/null; then
    if [ -z "$py" ]; then py="$cand"; fi
    if "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then py="$cand"; break; fi
  fi
done
if [ -z "$py" ]; then
  echo "error: no Python with torch, numpy, pytest and transformers found (set PYTHON=...)" >&2
  exit 1
fi
export PYTHON="$py" PYTHONUNBUFFERED=1

summary="$out/summary.md"
commit="$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
{
  echo "# GPU check: $gpu"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- commit: $commit ($(git log -1 --format=%s 2>/dev/null | cut -c1-100))"
  echo "- host: $(uname -srm); $(nproc) CPU cores"
  echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | head -n1)"
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -n2 | head -n1)"
  echo "- python: $py ($("$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'))"
  echo "- stages requested: $what; time budget ${budget} s"
  echo
  echo "| stage | command | exit | seconds |"
  echo "|---|---|---:|---:|"
} > "$summary"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
nvidia-smi -q >> "$out/nvidia-smi.txt" 2>&1

status=0
# run_stage NAME LOG TIMEOUT CMD...: runs CMD (output appended to LOG) unless past the budget
run_stage() {
  local name="$1" log="$2" limit="$3"; shift 3
  if [ "$what" = all ] && [ "$SECONDS" -ge "$budget" ]; then
    echo "| $name | \`$(printf '%q ' "$@")\` | skipped: past the ${budget} s budget, run \`bash dev/gpu_check.sh ${name%% *}\` | - |" >> "$summary"
    status=1
    return
  fi
  local cmd; cmd="$(printf '%q ' "$@")"; cmd="${cmd% }"
  local left=$((budget - SECONDS)); [ "$what" != all ] && left="$limit"
  [ "$left" -gt "$limit" ] && left="$limit"
  [ "$left" -lt 30 ] && left=30
  local t0=$SECONDS
  echo "== $name: $cmd (limit ${left} s)" | tee -a "$log"
  timeout --signal=TERM --kill-after=10 "$left" "$@" >> "$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  echo "| $name | \`$cmd\` | $rc$([ $rc -eq 124 ] && echo ' (timed out)') | $((SECONDS - t0)) |" >> "$summary"
  [ $rc -eq 0 ] || status=1
}

jobs="$(nproc)"
case "$what" in
  all) targets="train_gpt2fp32cu cuda-workbenches dev/cuda/bin/emu/train_gpt2fp32cu train_gpt2";;
  tests) targets="train_gpt2fp32cu cuda-workbenches dev/cuda/bin/emu/train_gpt2fp32cu train_gpt2";;
  bench) targets="train_gpt2fp32cu";;
  workbenches) targets="cuda-workbenches";;
esac
# shellcheck disable=SC2086
run_stage "build" "$out/build.log" 300 make -j"$jobs" $targets
make -s cuda-info >> "$out/build.log" 2>&1
if [ "$what" = all ] || [ "$what" = tests ]; then
  # the GPU variants only (-k "not emu"): the emulator variants are CI's, on machines without a GPU.
  # pytest-xdist, when installed, runs them 8 at a time (the build stage made every binary, so
  # the workers' `make` calls find them up to date)
  xdist=()
  if "$py" -c "import xdist" 2>/dev/null; then xdist=(-n 8); fi
  run_stage "tests" "$out/tests.log" 420 "$py" -m pytest -q -rs "${xdist[@]}" -k "not emu" tests/test_cuda_build.py \
      tests/test_helpers.py tests/test_gpu_parity.py tests/test_gpu_train.py tests/test_gpu_workbenches.py \
      tests/test_gpu_sanitizer.py tests/test_gpu_bench.py tests/test_gpu_regularizers.py \
      "tests/test_answer_loss.py::test_answer_only_loss_and_accuracy[cuda-gpu]"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  run_stage "bench" "$out/bench_gpu.log" 480 "$py" -m dev.bench_gpu --out "$out/bench_gpu.md" --json "$out/bench_gpu.json"
fi
if [ "$what" = all ] || [ "$what" = workbenches ]; then
  for f in dev/cuda/*.cu; do
    n="$(basename "$f" .cu)"
    run_stage "workbenches $n" "$out/workbenches.log" 120 "dev/cuda/bin/$n"
  done
fi

{
  echo
  echo "Total: ${SECONDS} s; overall: $([ $status -eq 0 ] && echo PASS || echo 'FAIL or incomplete (see the table and logs)')"
  if [ -f "$out/bench_gpu.md" ]; then echo; echo "## Benchmark"; echo; cat "$out/bench_gpu.md"; fi
  if [ -f "$out/tests.log" ]; then echo; echo "## Tests (last lines)"; echo; echo '```'; tail -n 25 "$out/tests.log"; echo '```'; fi
} >> "$summary"
echo "wrote $out (summary: $summary)"
cat "$summary"
exit $status
