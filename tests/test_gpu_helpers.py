"""Helpers shared by the CUDA-trainer tests (tests/test_gpu_*.py), plus tests of the helpers.

Every CUDA test runs on two backends of the same source, train_gpt2_fp32.cu:
  gpu   ./train_gpt2fp32cu built with nvcc (`make train_gpt2fp32cu`) on a real GPU; skipped, with
        the reason, when `nvidia-smi -L` lists no GPU (or $CUDA_TESTS_GPU=0).
  emu   dev/cuda/bin/emu/train_gpt2fp32cu: the same file compiled by g++ against the CPU emulator
        dev/cuda/emu/cuda_emu.h (`make dev/cuda/bin/emu/train_gpt2fp32cu`). It runs every kernel's
        threads as fibers with real barriers and warp shuffles and cuBLAS as plain loops, so it
        checks the kernels' indexing, synchronization and the trainer's logic on any machine (CI
        included); it says nothing about speed, and float rounding differs from the GPU's.
What it provides:
  BACKENDS                  ["emu", "gpu"], for pytest.mark.parametrize("backend", BACKENDS)
  gpu_available()           (bool, reason)
  cuda_trainer(backend)     path of the trainer binary for the backend (built once per session);
                            pytest.skip for "gpu" without a GPU
  workbench(backend, name)  path of a dev/cuda workbench binary for the backend
  compute_sanitizer()       path of compute-sanitizer, or None
  assert_run_within_spread(what, got_dir, want_dir, spread_dirs, steps, lr)
                            two runs of our trainers (e.g. one resumed by the other trainer) agree:
                            final parameters and logged losses within FP32_ERROR_FACTOR times
                            the spread of CPU-trainer runs from starts one ulp away
The CPU trainer's helpers (run_trainer, assert_close, grad_tolerance, torch_train_steps, ...) live
in tests/test_cpu_helpers.py and are reused, not copied.
Run: python -m pytest -q tests/test_gpu_helpers.py
"""

import functools
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["emu", "gpu"]
EMU_DIR = os.path.join(REPO, "dev", "cuda", "bin", "emu")


@functools.lru_cache(maxsize=None)
def gpu_available():
    """(True, description) when nvidia-smi lists a GPU, else (False, why not)."""
    if os.environ.get("CUDA_TESTS_GPU") == "0":
        return False, "CUDA_TESTS_GPU=0 turns the GPU variants off"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no GPU: nvidia-smi is not installed"
    try:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"no GPU: nvidia-smi -L failed ({e})"
    lines = [l for l in r.stdout.splitlines() if l.startswith("GPU ")]
    if r.returncode != 0 or not lines:
        return False, f"no GPU: nvidia-smi -L exited {r.returncode} and listed no device"
    return True, lines[0]


def skip_without_gpu():
    ok, why = gpu_available()
    if not ok:
        pytest.skip(f"{why} (the emu variants of tests/test_gpu_*.py run the same CUDA source in the CPU emulator)")


@functools.lru_cache(maxsize=None)
def _make(*targets):
    r = subprocess.run(["make", "-s", *targets], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"`make {' '.join(targets)}` failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def cuda_trainer(backend):
    """Path of the CUDA trainer for `backend`; $TRAIN_GPT2FP32CU overrides the gpu binary."""
    if backend == "gpu":
        skip_without_gpu()
        if os.environ.get("TRAIN_GPT2FP32CU"):
            return os.environ["TRAIN_GPT2FP32CU"]
        _make("train_gpt2fp32cu")
        return os.path.join(REPO, "train_gpt2fp32cu")
    if backend == "emu":
        _make("dev/cuda/bin/emu/train_gpt2fp32cu")
        return os.path.join(EMU_DIR, "train_gpt2fp32cu")
    raise ValueError(f"unknown backend {backend!r}")


def workbench(backend, name):
    """Path of the dev/cuda/<name>.cu workbench built for `backend`."""
    if backend == "gpu":
        skip_without_gpu()
        _make(f"dev/cuda/bin/{name}")
        return os.path.join(REPO, "dev", "cuda", "bin", name)
    _make(f"dev/cuda/bin/emu/{name}")
    return os.path.join(EMU_DIR, name)


def compute_sanitizer():
    """compute-sanitizer from PATH or the CUDA installation, or None."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for d in ("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer", "/opt/cuda/bin"):
        p = os.path.join(d, "compute-sanitizer")
        if os.path.exists(p):
            return p
    return None



def assert_run_within_spread(what, got_dir, want_dir, spread_dirs, steps, lr):
    """got_dir's model_{steps}.bin and logged train/val losses against want_dir's, where both are
    fp32 runs of the same training and spread_dirs hold the same run from parameters moved by one
    ulp (tests/test_cpu_helpers.write_perturbed_checkpoint). Over `steps` AdamW steps rounding
    differences grow to a size that depends on every summation order (so on the BLAS kernel);
    the spread runs measure that size on this machine, and the difference between the two
    trainers must stay within FP32_ERROR_FACTOR times it plus 4 ulp
    (tests/test_cpu_helpers.assert_fp32_accurate). The key bias, whose true gradient is zero
    (see tests/test_cpu_train.py), gets lr * steps instead."""
    import numpy as np
    from dev.checkpoint import PARAM_NAMES, read_checkpoint
    from test_cpu_helpers import assert_close, assert_fp32_accurate, read_log, step_records

    def load(d):
        config, params = read_checkpoint(os.path.join(d, f"model_{steps:06d}.bin"))
        recs = step_records(read_log(os.path.join(d, "log.jsonl")))
        params["train_losses"] = np.array([r["train_loss"] for r in recs])
        params["val_losses"] = np.array([r["val_loss"] for r in recs if "val_loss" in r])
        return config, params

    config, want = load(want_dir)
    _, got = load(got_dir)
    spread = [load(d)[1] for d in spread_dirs]
    C = config.n_embd
    labels = dict(against="the reference run", spread_of="runs from starts one ulp away")
    for name in ("train_losses", "val_losses", *PARAM_NAMES):
        keep = None
        if name == "qkvb":
            assert_close(f"qkvb key block {what}", got[name][:, C:2 * C], want[name][:, C:2 * C], lr * steps)
            keep = np.ones(want[name].shape, dtype=bool)
            keep[:, C:2 * C] = False
        assert_fp32_accurate(f"{name} {what}", got[name], want, spread, keep, key=name, **labels)

# ---- tests of the helpers ------------------------------------------------------------------

def test_gpu_detection_reports_a_reason():
    ok, why = gpu_available()
    assert isinstance(ok, bool) and why, "gpu_available must explain itself"


def test_emulator_catches_a_planted_race(tmp_path):
    """The emulator is only a useful check if it can fail: a kernel that reads shared memory
    written by another warp without __syncthreads must give a wrong answer under it, and a
    shuffle after some lanes returned must abort."""
    src = tmp_path / "race.cu"
    src.write_text(r'''
#include <stdio.h>
#include <cuda_runtime.h>
__global__ void no_barrier(float* out) {
    __shared__ float s[64];
    s[threadIdx.x] = threadIdx.x + 1.0f;
    out[threadIdx.x] = s[63 - threadIdx.x];  // needs __syncthreads() before this read
}
__global__ void divergent_shuffle(float* out, int n) {
    if ((int)threadIdx.x >= n) return;
    out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, 1.0f, 1);
}
int main(int argc, char** argv) {
    float* d; cudaMalloc(&d, 64 * sizeof(float));
    float h[64];
    if (argc > 1) { divergent_shuffle<<<1, 64>>>(d, 40); return 0; }
    no_barrier<<<1, 64>>>(d);
    cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost);
    int wrong = 0;
    for (int i = 0; i < 64; i++) wrong += h[i] != (float)(64 - i);
    printf("%d\n", wrong);
    return 0;
}
''')
    cpp, exe = tmp_path / "race.cpp", tmp_path / "race"
    subprocess.run(["python3", os.path.join(REPO, "dev/cuda/emu/translate.py"), str(src), str(cpp)], check=True)
    subprocess.run(["g++", "-std=c++20", "-O1", "-include", os.path.join(REPO, "dev/cuda/emu/cuda_emu.h"),
                    "-I", os.path.join(REPO, "dev/cuda/emu/include"), str(cpp), "-o", str(exe)], check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and int(r.stdout.strip()) > 0, "the missing barrier went unnoticed"
    r = subprocess.run([str(exe), "divergent"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "without all 32 lanes" in r.stderr, r.stderr
