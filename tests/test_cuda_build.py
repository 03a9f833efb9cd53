"""The CUDA trainer compiles and links with nvcc, on any machine that has nvcc (CI included).

What it checks (skipped, with the reason, when no nvcc is found):
  - `make -B train_gpt2fp32cu GPU_ARCHS=sm_80` builds and links the trainer (one architecture to keep
    the build short on 2 cores; the default build covers sm_80..sm_90 or the GPU's own), into a
    temporary folder (CUDA_TRAINER_OUT) so it never replaces the ./train_gpt2fp32cu built for a GPU;
  - the compiler prints no warning;
  - make's detection lines say what it found (nvcc, cuBLAS, the architecture);
  - the binary answers --help (exit 0, lists the CUDA flags --tf32 and --attention), and on a
    machine without a GPU exits 1 with a message that says so and points to ./train_gpt2;
  - each kernel header llmc/*.cuh compiles on its own (so it includes what it uses), warning-free
    (-Werror): with nvcc (`make cuda-headers`, PTX for sm_80) and, needing no nvcc, through the
    CPU emulator (`make cuda-emu-headers`: dev/cuda/emu/translate.py, then g++);
  - every llmc/*.cuh opens with a comment that has a `// defines:` line, and the workbenches in
    dev/cuda/ include the headers rather than copies (each shipped kernel is defined once).
Run: python -m pytest -q tests/test_cuda_build.py
"""

import glob
import os
import re
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


CUDA_HEADERS = sorted(glob.glob(os.path.join(REPO, "llmc", "*.cuh")))


@pytest.mark.parametrize("backend", ["nvcc", "emu"])
def test_each_cuda_header_compiles_alone(backend):
    if backend == "nvcc" and nvcc_path() is None:
        pytest.skip("nvcc not found (the emu variant compiles the headers with g++)")
    assert CUDA_HEADERS, "no llmc/*.cuh"
    target = "cuda-headers" if backend == "nvcc" else "cuda-emu-headers"
    r = subprocess.run(["make", "-B", "-j2", target, "GPU_ARCHS=sm_80"], cwd=REPO, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, f"make {target} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    # "warning" as a diagnostic says it ("warning:", "warning #177-D"), not the "all-warnings" of the command
    warnings = [l for l in (r.stdout + r.stderr).splitlines() if re.search(r"\bwarning\b(?!s)", l, re.I)]
    assert not warnings, "\n".join(warnings[:20])
    built = sorted(glob.glob(os.path.join(REPO, "dev", "cuda", "bin", *(["emu"] if backend == "emu" else []),
                                          "headers", "*.o")))
    assert len(built) >= len(CUDA_HEADERS), built


def test_cuda_headers_say_what_they_define_and_are_not_copied():
    defined = {}
    for path in CUDA_HEADERS:
        text = open(path).read()
        head = text[: text.index("#ifndef")]
        assert re.search(r"^// defines: \w", head, re.M), f"{path}: no '// defines:' line in its opening comment"
        for name in re.findall(r"^__global__ void (?:__launch_bounds__\(\w+\) )?(\w+)\(", text, re.M):
            assert name not in defined, f"kernel {name} is defined in {defined[name]} and {path}"
            defined[name] = path
    # no workbench or trainer redefines a kernel of llmc/*.cuh: they include it
    for path in glob.glob(os.path.join(REPO, "dev", "cuda", "*.cu")) + [os.path.join(REPO, "train_gpt2_fp32.cu")]:
        text = open(path).read()
        for name in re.findall(r"^__global__ void (?:__launch_bounds__\(\w+\) )?(\w+)\(", text, re.M):
            assert name not in defined, f"{path} defines {name}, which {defined[name]} ships: include the header"
