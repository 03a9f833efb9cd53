"""Bad input to the CPU trainer: a clear message, a non-zero exit, never a crash.

What it checks: for each case below, ./train_gpt2 exits with status 1 (not a signal), prints
`error: ...` on stderr naming the problem (the file and the offending value), and no sanitizer or
crash output. Cases: missing / truncated / wrong-magic / wrong-version / inconsistent model file,
token id >= V in a shard, a shard too small for one batch, a truncated shard, an empty glob, T
longer than the model's context, an example shard with the wrong -t, mixed shard kinds, an unknown
flag, a non-numeric or non-finite value, a missing value, an unknown choice, out-of-range values,
parity batches that do not fit the model, a resume state whose model is missing. And a NaN loss:
training stops, says at which step, exits 1, and keeps the last good checkpoint untouched (no
checkpoint for the diverged step).
Run: python -m pytest -q tests/test_cpu_errors.py
"""

import pytest

from dev.checkpoint import read_checkpoint
from helpers import BAD_INPUT_CASES, assert_clear_error, base_args, case_args, read_log, run_trainer

@pytest.mark.parametrize("name", BAD_INPUT_CASES)
def test_bad_input_is_a_clear_error(bad_input_files, name):
    args, want = case_args(bad_input_files, name)
    r = run_trainer(*args, check=False)
    assert_clear_error(r, name, want)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(bad_input_files):
    out = bad_input_files / "run"
    # a learning rate of 1e30 without clipping sends the weights to ~1e30 after step 1, and the
    # logits of step 2 overflow to inf - inf = NaN
    r = run_trainer(*base_args(bad_input_files, **{"--steps": 6}), "-l", 1e30, "--grad-clip", 0, "--lr-schedule",
                    "constant", "-o", out, "--save-every", 1, check=False)
    assert r.returncode == 1, r.stderr
    assert "error: the loss is NaN at step 2" in r.stderr, r.stderr
    assert "last good checkpoint is" in r.stderr and "model_000001.bin" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", "model_000001.bin", "state_000001.bin",
                                                     "train.lock"]
    read_checkpoint(out / "model_000001.bin")  # loads: finite and well-formed
    last = read_log(out / "log.jsonl")[-1]
    assert last["step"] == 2 and "error" in last and last["train_loss"] is None


def test_parameters_that_overflow_stop_before_a_save(bad_input_files):
    """A legal command line whose first update overflows the weights (lr 1e38 with weight decay 10:
    p * (1 - lr * wd) = -inf) stops at step 1 with the NaN-stop message and saves nothing."""
    out = bad_input_files / "run"
    r = run_trainer(*base_args(bad_input_files, **{"--steps": 1}), "-l", "1e38", "-c", 10, "-o", out, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: the parameters after the update are" in r.stderr and "at step 1" in r.stderr, r.stderr
    assert "no checkpoint of this run was saved" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", "train.lock"]
    assert read_log(out / "log.jsonl")[-1]["error"] == "parameters after the update are not finite"


def test_help_lists_every_flag_with_its_default(bad_input_files):
    r = run_trainer("--help")
    for flag in ("-i, --train-data", "-j, --val-data", "-o, --output-dir", "-b, --batch-size",
                 "-t, --seq-len", "-l, --lr", "-v, --val-every", "-m, --val-batches", "-s, --sample-every",
                 "-g, --gen-tokens", "--model", "--steps", "--weight-decay", "--beta1", "--beta2", "--eps",
                 "--grad-clip", "--warmup", "--lr-schedule", "--min-lr-frac", "--seed", "--save-every",
                 "--resume", "--temperature", "--top-k", "--top-p", "--tokenizer", "--decay-params",
                 "--parity-batch", "--parity-out", "--parity-losses", "--threads"):
        assert flag in r.stdout, f"--help does not list {flag}"
    assert r.stdout.count("(default: ") >= 30
