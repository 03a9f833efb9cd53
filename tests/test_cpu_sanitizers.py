"""The CPU trainer under AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer.

What it checks: `make asan` builds ./train_gpt2_asan (-fsanitize=address,undefined,
-fno-sanitize-recover=all, so any finding exits non-zero), and these runs exit 0 with no sanitizer
report: a few training steps on token shards with validation, sampling and checkpoints; resuming
from a checkpoint; samples longer than T (sliding window) with top-k and top-p; example shards (loss mask, accuracy, a partial validation batch); both parity
modes; the regularizers (dropout, weight noise, decay toward init) with a resume; LoRA training, its
resume, an adapter file as the start and its parity outputs (with --parity-attention). A bad-input run exits 1 with its message and no sanitizer report either.
Run: python -m pytest -q tests/test_cpu_sanitizers.py   (the sanitized build takes ~10 s)
"""

import numpy as np
import pytest

from dev.configs import NAMED_CONFIGS
from dev.parity_files import write_parity_batch
from dev.shards import write_example_shard, write_token_shard
from helpers import asan_trainer, make_checkpoint, run_trainer

ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
       "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def run_clean(*args, expect=0):
    r = run_trainer(*args, binary=asan_trainer(), check=False, env=ENV, timeout=600)
    found = [s for s in REPORTS if s in r.stderr]
    assert not found, f"sanitizer report ({found}):\n{r.stderr[-6000:]}"
    assert r.returncode == expect, f"exit {r.returncode}, expected {expect}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture
def files(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, seed=0, scale=0.05)
    rng = np.random.default_rng(0)
    write_token_shard(tmp_path / "train_0.bin", rng.integers(0, config.vocab_size, 700))
    write_token_shard(tmp_path / "train_1.bin", rng.integers(0, config.vocab_size, 500))
    write_token_shard(tmp_path / "val.bin", rng.integers(0, config.vocab_size, 400))
    E = 8
    mask = np.zeros((11, E), dtype=np.uint8)
    mask[:, 4] = 1
    write_example_shard(tmp_path / "ex_train.bin", rng.integers(0, config.vocab_size, (11, E)), mask,
                        config.vocab_size)
    write_example_shard(tmp_path / "ex_val.bin", rng.integers(0, config.vocab_size, (7, E)), mask[:7],
                        config.vocab_size)
    return tmp_path


def test_training_resume_and_parity_are_sanitizer_clean(files):
    d = files
    common = ["--model", d / "model.bin", "-l", 1e-3, "--warmup", 1, "--weight-decay", 0.1, "-s", 2,
              "-g", 5, "--tokenizer", "", "--threads", 2]
    run_clean(*common, "-i", d / "train_*.bin", "-j", d / "val.bin", "-b", 2, "-t", 32, "-o", d / "run",
              "--steps", 4, "-v", 2, "--save-every", 2)
    run_clean("--resume", d / "run/state_000002.bin", "-i", d / "train_*.bin", "-j", d / "val.bin",
              "-b", 2, "-t", 32, "--steps", 4, "-v", 2, "-s", 2, "-g", 5, "--tokenizer", "")
    # samples longer than T slide a T-token window; top-k and top-p sort the probabilities
    run_clean("--model", d / "model.bin", "-i", d / "train_*.bin", "-b", 2, "-t", 16, "--steps", 1, "-v", 0,
              "-s", 1, "-g", 40, "--tokenizer", "", "--temperature", 0.8, "--top-k", 20, "--top-p", 0.9)
    run_clean(*common, "-i", d / "ex_train.bin", "-j", d / "ex_val.bin", "-b", 3, "-o", d / "ex",
              "--steps", 3, "-v", 3, "-m", -1, "--decay-params", "matrices")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 500, (2, 9)), rng.integers(0, 500, (2, 9))
    write_parity_batch(d / "pb.bin", x, y, (rng.random((2, 9)) < 0.5).astype(np.int32) | np.eye(2, 9, dtype=np.int32))
    run_clean("--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin")
    run_clean("--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--steps", 3,
              "--parity-losses", d / "l.bin", "-o", d / "p", "--grad-clip", 0.5)
    # the regularizers: dropout, weight noise, decay toward init (its state holds the initial
    # parameters), through a checkpoint and a resume, and in parity mode
    reg = ["--dropout", 0.1, "--weight-noise", 0.01, "--decay-toward-init", 1]
    run_clean(*common, *reg, "-i", d / "train_*.bin", "-j", d / "val.bin", "-b", 2, "-t", 32, "-o", d / "reg",
              "--steps", 3, "-v", 2, "--save-every", 2)
    run_clean("--resume", d / "reg/state_000002.bin", *reg, "-i", d / "train_*.bin", "-j", d / "val.bin",
              "-b", 2, "-t", 32, "-v", 2, "-s", 0, "--weight-decay", 0.1)
    run_clean("--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g_reg.bin", *reg)
    # LoRA on every target with dropout and sampling, its checkpoint (adapter file) and resume, a
    # saved adapter as the start, and the parity outputs (the adapters' gradients, the attention weights)
    lora = ["--lora-rank", 3, "--lora-alpha", 6, "--lora-targets", "qkvw,attprojw,fcw,fcprojw"]
    run_clean(*common, *lora, "--dropout", 0.1, "-i", d / "train_*.bin", "-j", d / "val.bin", "-b", 2, "-t", 32,
              "-o", d / "lora", "--steps", 3, "-v", 2, "--save-every", 2)
    run_clean("--resume", d / "lora/state_000002.bin", "--dropout", 0.1, "-i", d / "train_*.bin", "-j",
              d / "val.bin", "-b", 2, "-t", 32, "-v", 2, "-s", 0)
    run_clean("--model", d / "model.bin", "--lora-adapter", d / "lora/adapter_000003.bin", "--parity-batch",
              d / "pb.bin", "--parity-out", d / "g_lora.bin", "--parity-attention", d / "att.bin")


def test_bad_input_is_sanitizer_clean(files):
    tokens = np.zeros(600, dtype=np.int64)
    tokens[5] = 512
    write_token_shard(files / "bad.bin", tokens)
    r = run_clean("--model", files / "model.bin", "-i", files / "bad.bin", "-b", 2, "-t", 16, expect=1)
    assert "token id 512" in r.stderr
