"""The CUDA trainer compiles and links with nvcc, on any machine that has nvcc (CI included).

What it checks (skipped, with the reason, when no nvcc is found):
  - `make -B train_gpt2fp32cu GPU_ARCHS=sm_80` builds and links the trainer (one architecture to keep
    the build short on 2 cores; the default build covers sm_80..sm_90 or the GPU's own), into a
    temporary folder (CUDA_TRAINER_OUT) so it never replaces the ./train_gpt2fp32cu built for a GPU;
  - the compiler prints no warning;
  - make's detection lines say what it found (nvcc, cuBLAS, the architecture);
  - the binary answers --help (exit 0, lists the CUDA flags --tf32 and --attention), and on a
    machine without a GPU exits 1 with a message that says so and points to ./train_gpt2.
Run: python -m pytest -q tests/test_cuda_build.py
"""

import os
import shutil
import subprocess

import pytest

from helpers import gpu_available, REPO


def nvcc_path():
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if nvcc_path() is None:
        pytest.skip("nvcc not found (install the CUDA toolkit to build train_gpt2fp32cu)")
    out = tmp_path_factory.mktemp("cuda_build") / "train_gpt2fp32cu"
    # -B: build even when ./train_gpt2fp32cu is up to date (the output goes elsewhere)
    r = subprocess.run(["make", "-B", "train_gpt2fp32cu", "GPU_ARCHS=sm_80", f"CUDA_TRAINER_OUT={out}"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    return out, r


def test_builds_and_links(built):
    out, r = built
    assert r.returncode == 0, f"make train_gpt2fp32cu failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert out.exists() and os.access(out, os.X_OK), f"no executable at {out}"


def test_no_compiler_warnings(built):
    _, r = built
    warnings = [l for l in (r.stdout + r.stderr).splitlines() if "warning" in l.lower()]
    assert not warnings, "nvcc/gcc warnings:\n" + "\n".join(warnings[:20])


def test_detection_is_printed(built):
    _, r = built
    text = r.stdout
    assert "train_gpt2fp32cu: nvcc: " in text, text
    assert "train_gpt2fp32cu: cuBLAS: " in text and "NOT FOUND" not in text, text
    assert "train_gpt2fp32cu: GPU architecture: sm_80 (GPU_ARCHS given)" in text, text


def test_help_and_no_gpu_message(built):
    out, r = built
    if r.returncode != 0:
        pytest.skip("the build failed (see test_builds_and_links)")
    h = subprocess.run([str(out), "--help"], capture_output=True, text=True, timeout=60)
    assert h.returncode == 0, h.stderr
    assert "--tf32" in h.stdout and "--attention" in h.stdout and "--parity-batch" in h.stdout
    has_gpu, _ = gpu_available()
    if has_gpu:
        pytest.skip("a GPU is present: the no-GPU message cannot be seen here")
    n = subprocess.run([str(out), "--model", "nonexistent.bin"], capture_output=True, text=True, timeout=60)
    assert n.returncode == 1, (n.returncode, n.stderr)
    assert "error: no CUDA GPU is available" in n.stderr and "./train_gpt2" in n.stderr, n.stderr
