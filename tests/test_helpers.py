"""Tests of the shared test helpers (tests/helpers/): the checks other tests rely on can fail.

What it checks: assert_close really fails and names the worst element; the float64 rule of
assert_fp32_accurate passes rounding and fails a larger error at the element it names; lr_at (the
mirror of llmc/schedule.h) matches hand-computed values; gpu_available() answers from what
nvidia-smi says (no nvidia-smi, one that fails, one that lists no GPU, one that lists a GPU,
CUDA_TESTS_GPU=0), and cuda_trainer("gpu") skips with that reason; the CUDA emulator catches a
planted race (a missing __syncthreads) and a shuffle after some lanes returned.
Run: python -m pytest -q tests/test_helpers.py
"""

import os
import subprocess

import numpy as np
import pytest

from helpers import (FP32_ERROR_FACTOR, REPO, assert_close, assert_fp32_accurate, cuda_trainer,
                     gpu_available, lr_at)


def test_assert_close_fails_and_names_the_worst_element():
    ref = np.zeros((2, 3), dtype=np.float32)
    got = ref.copy()
    got[1, 2] = 5e-3
    got[0, 1] = 1e-3
    assert_close("ok", got, ref, atol=1e-2)
    with pytest.raises(AssertionError) as e:
        assert_close("dqkvw", got, ref, atol=1e-4)
    msg = str(e.value)
    assert "dqkvw" in msg and "(1, 2)" in msg and "5.000e-03" in msg, msg
    got[0, 0] = np.nan
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", got, ref, atol=1.0)


def test_fp32_rule_passes_rounding_and_fails_a_larger_error():
    rng = np.random.default_rng(0)
    ref64 = {"w": rng.standard_normal((50, 40))}
    runs32 = [{"w": ref64["w"].astype(np.float32)}]
    assert_fp32_accurate("rounded", ref64["w"].astype(np.float32), ref64, runs32, key="w")
    torch_err = float(np.abs(runs32[0]["w"] - ref64["w"]).max())
    worse = ref64["w"].copy()
    worse[3, 7] += 3 * FP32_ERROR_FACTOR * torch_err
    with pytest.raises(AssertionError) as e:
        assert_fp32_accurate("dfcw", worse, ref64, runs32, key="w")
    assert "dfcw" in str(e.value) and "(3, 7)" in str(e.value), str(e.value)
    keep = np.ones(worse.shape, dtype=bool)
    keep[3, 7] = False
    assert_fp32_accurate("dfcw without the bad element", worse, ref64, runs32, keep, key="w")


def test_lr_schedule_mirror_matches_hand_values():
    # warmup: step 1 of 4 warmup steps runs at lr/4
    assert lr_at(1, 1.0, 4, 10) == pytest.approx(0.25)
    assert lr_at(4, 1.0, 4, 10) == pytest.approx(1.0)
    # first step after warmup: full lr (r = 0); cosine halfway: the mean of lr and floor
    assert lr_at(5, 1.0, 4, 10) == pytest.approx(1.0)
    assert lr_at(8, 1.0, 4, 10, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(8, 1.0, 4, 10, "linear", 0.0) == pytest.approx(0.5)
    assert lr_at(9, 2.0, 0, 10, "constant") == 2.0


def fake_nvidia_smi(folder, script):
    """An executable nvidia-smi in `folder` running the shell `script`."""
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script + "\n")
    smi.chmod(0o755)
    return str(folder)


@pytest.fixture
def fresh_gpu_detection(monkeypatch):
    """gpu_available() re-evaluated under the test's environment, and again after it."""
    monkeypatch.delenv("CUDA_TESTS_GPU", raising=False)
    gpu_available.cache_clear()
    yield
    gpu_available.cache_clear()


def test_gpu_detection_follows_nvidia_smi(tmp_path, monkeypatch, fresh_gpu_detection):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu_available() == (False, "no GPU: nvidia-smi is not installed")
    with pytest.raises(pytest.skip.Exception, match="nvidia-smi is not installed"):
        cuda_trainer("gpu")
    gpu_available.cache_clear()
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "failing", "echo 'NVIDIA-SMI has failed' >&2; exit 9"))
    assert gpu_available() == (False, "no GPU: nvidia-smi -L exited 9 and listed no device")
    gpu_available.cache_clear()
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "none", "echo 'No devices found.'"))
    assert gpu_available() == (False, "no GPU: nvidia-smi -L exited 0 and listed no device")
    gpu_available.cache_clear()
    listed = "GPU 0: NVIDIA H200 (UUID: GPU-0000)"
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "one", f"echo '{listed}'; echo 'GPU 1: other'"))
    assert gpu_available() == (True, listed)
    gpu_available.cache_clear()
    monkeypatch.setenv("CUDA_TESTS_GPU", "0")
    ok, why = gpu_available()
    assert not ok and "CUDA_TESTS_GPU=0" in why, why
    with pytest.raises(pytest.skip.Exception, match="CUDA_TESTS_GPU=0"):
        cuda_trainer("gpu")


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
