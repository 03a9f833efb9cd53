"""compute-sanitizer finds no error in the CUDA trainer (needs a GPU and compute-sanitizer).

What it checks, with `compute-sanitizer --tool memcheck --error-exitcode 99` (out-of-bounds and
misaligned accesses, invalid frees, errors returned by CUDA calls):
  - one forward/backward in parity mode with each attention implementation (--attention
    fused-tf32, fused and cublas), T not a multiple of the kernels' tiles and a loss mask;
  - 3 training steps on token shards with validation, sampling and checkpoints;
  - 3 steps on example shards whose validation set ends in a partial batch;
  - parity and 3 training steps with the regularizers on (dropout, weight noise, decay toward init);
  - 3 LoRA steps on every target with a checkpoint, and their resume;
and with `--tool racecheck` (shared-memory data races) both fused attentions' forward and backward
in parity mode. Each run must exit 0 and report 0 errors (racecheck: 0 hazards).
Skipped, with the reason, without a GPU or without compute-sanitizer.
Everywhere (CI included), the closest CPU-side check: the trainer compiled for the CPU emulator
(dev/cuda/emu) with AddressSanitizer and UBSan, where device memory is host memory of the exact
size asked for, so an out-of-bounds read or write in any kernel is reported; it runs parity with
each attention implementation, training with validation, sampling, checkpoints and a resume, and
example shards, a run with the regularizers on, and LoRA (training, resume, parity from an adapter
file), and must exit 0 with no report.
Run: python -m pytest -q tests/test_gpu_sanitizer.py
"""

import os
import re
import subprocess

import numpy as np
import pytest

from dev.configs import NAMED_CONFIGS
from dev.parity_files import write_parity_batch
from helpers import (compute_sanitizer, cuda_trainer, EMU_DIR, example_data, make_checkpoint, make_targets,
                     REPO, token_data)

TINY = NAMED_CONFIGS["tiny"]


@pytest.fixture
def sanitized(tmp_path):
    binary = cuda_trainer("gpu")  # skips without a GPU
    tool = compute_sanitizer()
    if tool is None:
        pytest.skip("compute-sanitizer not found (it ships with the CUDA toolkit)")
    make_checkpoint(tmp_path / "model.bin", TINY, seed=3, scale=0.05)

    def run(tool_name, *args):
        cmd = [tool, "--tool", tool_name, "--error-exitcode", "99", binary, *map(str, args)]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
        text = r.stdout + r.stderr
        assert r.returncode == 0, f"{tool_name} exit {r.returncode}: {' '.join(cmd)}\n{text[-6000:]}"
        summary = re.findall(r"(ERROR SUMMARY: \d+ error|RACECHECK SUMMARY: \d+ hazard)", text)
        assert summary, f"no sanitizer summary in the output:\n{text[-3000:]}"
        assert all(re.search(r": 0 (error|hazard)", s) for s in summary), "\n".join(summary) + "\n" + text[-6000:]
        return r
    return run


def parity_batch(tmp_path, B=3, T=45):
    rng = np.random.default_rng(1)
    x = rng.integers(0, TINY.vocab_size, (B, T))
    y = rng.integers(0, TINY.vocab_size, (B, T))
    mask = (rng.random((B, T)) < 0.6).astype(np.int32)
    mask[0, -1] = 1
    write_parity_batch(tmp_path / "batch.bin", x, y, mask)
    return tmp_path / "batch.bin"


@pytest.mark.parametrize("attention", ["fused-tf32", "fused", "cublas"])
def test_memcheck_parity(tmp_path, sanitized, attention):
    batch = parity_batch(tmp_path)
    sanitized("memcheck", "--model", tmp_path / "model.bin", "--parity-batch", batch, "--parity-out",
              tmp_path / "g.bin", "--attention", attention)


@pytest.mark.parametrize("kind", ["tokens", "examples"])
def test_memcheck_training(tmp_path, sanitized, kind):
    data = (token_data if kind == "tokens" else example_data)(tmp_path, TINY)
    sanitized("memcheck", "--model", tmp_path / "model.bin", *data, "-o", tmp_path / "run", "--steps", 3,
              "-v", 2, "-m", -1, "-s", 3, "-g", 4)


REGULARIZERS = ["--dropout", 0.1, "--weight-noise", 0.01, "--decay-toward-init", 1, "--weight-decay", 0.1]


def test_memcheck_regularizers(tmp_path, sanitized):
    batch = parity_batch(tmp_path)
    sanitized("memcheck", "--model", tmp_path / "model.bin", "--parity-batch", batch, "--parity-out",
              tmp_path / "g.bin", *REGULARIZERS)
    data = token_data(tmp_path, TINY)
    sanitized("memcheck", "--model", tmp_path / "model.bin", *data, "-o", tmp_path / "run", "--steps", 3,
              "-v", 2, "-m", 1, "-s", 0, *REGULARIZERS)


def test_memcheck_lora(tmp_path, sanitized):
    data = token_data(tmp_path, TINY)
    sanitized("memcheck", "--model", tmp_path / "model.bin", *data, "-o", tmp_path / "run", "--steps", 3, "-v", 2,
              "-m", 1, "-s", 2, "-g", 4, "--lora-rank", 4, "--lora-targets", "qkvw,attprojw,fcw,fcprojw", "-n", 2)
    sanitized("memcheck", "--resume", tmp_path / "run/state_000002.bin", *data, "-v", 0, "-s", 0)


@pytest.mark.parametrize("attention", ["fused-tf32", "fused"])
def test_racecheck_fused_attention(tmp_path, sanitized, attention):
    batch = parity_batch(tmp_path, B=1, T=70)
    sanitized("racecheck", "--model", tmp_path / "model.bin", "--parity-batch", batch, "--parity-out",
              tmp_path / "g.bin", "--attention", attention)


def test_emulated_trainer_under_address_sanitizer(tmp_path):
    make_targets("dev/cuda/bin/emu/train_gpt2fp32cu_asan")
    exe = f"{EMU_DIR}/train_gpt2fp32cu_asan"
    env = dict(os.environ, ASAN_OPTIONS="detect_stack_use_after_return=0:detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")

    def run(*args):
        r = subprocess.run([exe, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
        text = r.stdout + r.stderr
        assert r.returncode == 0 and "ERROR: AddressSanitizer" not in text and "runtime error" not in text, \
            f"exit {r.returncode}: {' '.join(map(str, args))}\n{text[-6000:]}"

    make_checkpoint(tmp_path / "model.bin", TINY, seed=3, scale=0.05)
    batch = parity_batch(tmp_path)
    for attention in ("fused-tf32", "fused", "cublas"):
        run("--model", tmp_path / "model.bin", "--parity-batch", batch, "--parity-out", tmp_path / f"{attention}.bin",
            "--attention", attention, "--tf32", 1 if attention == "fused-tf32" else 0)
    data = token_data(tmp_path, TINY)
    # (the emulator under ASan takes seconds per step: few steps)
    run("--model", tmp_path / "model.bin", *data, "-o", tmp_path / "run", "--steps", 2, "-v", 2, "-m", 1, "-s", 2,
        "-g", 2, "--save-every", 1)
    run("--resume", tmp_path / "run/state_000001.bin", *data, "--steps", 2, "-v", 0, "-s", 0)
    run("--model", tmp_path / "model.bin", *example_data(tmp_path, TINY), "-o", tmp_path / "ex", "--steps", 1,
        "-v", 1, "-m", -1, "-s", 0)
    (tmp_path / "tok").mkdir()
    data = token_data(tmp_path / "tok", TINY)  # example_data replaced val.bin
    run("--model", tmp_path / "model.bin", *data, "-o", tmp_path / "reg", "--steps", 2, "-v", 2, "-m", 1, "-s", 0,
        "--save-every", 1, *REGULARIZERS)
    run("--resume", tmp_path / "reg/state_000001.bin", *data, "-v", 0, "-s", 0, *REGULARIZERS)
    # LoRA on every target: training with a checkpoint, its resume, and the parity pass from the adapter file
    lora = ["--lora-rank", 3, "--lora-targets", "qkvw,attprojw,fcw,fcprojw"]
    run("--model", tmp_path / "model.bin", *data, "-o", tmp_path / "lora", "--steps", 2, "-v", 2, "-m", 1, "-s", 0,
        "--save-every", 1, "--tf32", 0, *lora)
    run("--resume", tmp_path / "lora/state_000001.bin", *data, "-v", 0, "-s", 0, "--tf32", 0)
    run("--model", tmp_path / "model.bin", "--lora-adapter", tmp_path / "lora/adapter_000002.bin", "--parity-batch",
        batch, "--parity-out", tmp_path / "g_lora.bin", "--tf32", 0)
