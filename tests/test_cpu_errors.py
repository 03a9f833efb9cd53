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

import numpy as np
import pytest

from dev.checkpoint import read_checkpoint, write_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.parity_files import write_parity_batch
from dev.shards import write_example_shard, write_token_shard
from test_cpu_helpers import read_log, run_trainer
from conftest import random_params

CONFIG = NAMED_CONFIGS["tiny"]  # maxT 64, V 500


@pytest.fixture
def files(tmp_path):
    """A valid model and valid shards; each case breaks one thing."""
    write_checkpoint(tmp_path / "model.bin", CONFIG, random_params(CONFIG, seed=0, scale=0.05))
    rng = np.random.default_rng(0)
    write_token_shard(tmp_path / "train.bin", rng.integers(0, CONFIG.vocab_size, 3000))
    write_token_shard(tmp_path / "val.bin", rng.integers(0, CONFIG.vocab_size, 1000))
    return tmp_path


def base_args(d, **override):
    args = {"--model": d / "model.bin", "-i": d / "train.bin", "-j": d / "val.bin", "-b": 2, "-t": 32,
            "--steps": 2, "-v": 0, "-s": 0}
    args.update(override)
    out = []
    for k, v in args.items():
        if v is not None:
            out += [k, v]
    return out


def corrupt_model(d, how):
    raw = bytearray((d / "model.bin").read_bytes())
    header = np.frombuffer(raw[:1024], dtype="<i4").copy()
    if how == "truncated":
        raw = raw[:len(raw) - 100]
    elif how == "magic":
        header[0] = 12345
    elif how == "version":
        header[1] = 5
    elif how == "dims":
        header[5] = 3  # NH = 3 does not divide C = 64
    if how != "truncated":
        raw[:1024] = header.tobytes()
    (d / "bad_model.bin").write_bytes(bytes(raw))
    return d / "bad_model.bin"


def case_args(d, name):
    """(trainer args, substrings the error message must contain) for case `name`."""
    if name == "missing model":
        return base_args(d, **{"--model": d / "nope.bin"}), ["nope.bin", "does not exist"]
    if name in ("truncated model", "wrong magic", "wrong version", "inconsistent dims"):
        how = {"truncated model": "truncated", "wrong magic": "magic", "wrong version": "version",
               "inconsistent dims": "dims"}[name]
        want = {"truncated": ["bad_model.bin", "truncated", "expected"],
                "magic": ["bad_model.bin", "magic number 12345", "20240326"],
                "version": ["bad_model.bin", "version 5", "expected 3"],
                "dims": ["bad_model.bin", "C=64 is not divisible by NH=3"]}[how]
        return base_args(d, **{"--model": corrupt_model(d, how)}), want
    if name == "token id >= V":
        tokens = np.zeros(3000, dtype=np.int64)
        tokens[1234] = 600
        write_token_shard(d / "bad.bin", tokens)
        return base_args(d, **{"-i": d / "bad.bin"}), ["bad.bin", "token id 600", "position 1234", "V=500"]
    if name == "token id >= V in val":
        tokens = np.zeros(3000, dtype=np.int64)
        tokens[7] = 501
        write_token_shard(d / "badval.bin", tokens)
        return base_args(d, **{"-j": d / "badval.bin", "-v": 1}), ["badval.bin", "token id 501", "position 7"]
    if name == "shard too small":
        write_token_shard(d / "small.bin", np.zeros(64, dtype=np.int64))
        return base_args(d, **{"-i": d / "small.bin"}), ["small.bin", "64 tokens", "B*T+1 = 65"]
    if name == "truncated shard":
        raw = (d / "train.bin").read_bytes()
        (d / "cut.bin").write_bytes(raw[:-10])
        return base_args(d, **{"-i": d / "cut.bin"}), ["cut.bin", "truncated"]
    if name == "empty glob":
        return base_args(d, **{"-i": d / "nothing_*.bin"}), ["nothing_*.bin", "no files match"]
    if name == "T > maxT":
        return base_args(d, **{"-t": 65}), ["-t 65", "maxT=64"]
    if name == "example shard with wrong -t":
        write_example_shard(d / "ex.bin", np.ones((10, 8), dtype=np.int64), np.eye(8, dtype=np.uint8)[[1] * 10], 500)
        return base_args(d, **{"-i": d / "ex.bin", "-j": None, "-t": 16}), ["-t 16", "E=8", "T must be E-1 = 7"]
    if name == "examples longer than the context":
        write_example_shard(d / "long.bin", np.ones((4, 80), dtype=np.int64), np.eye(80, dtype=np.uint8)[[1] * 4], 500)
        return base_args(d, **{"-i": d / "long.bin", "-j": None, "-t": None}), ["long.bin", "E=80", "maxT=64"]
    if name == "mixed shard kinds":
        write_example_shard(d / "ex_val.bin", np.ones((10, 33), dtype=np.int64),
                            np.eye(33, dtype=np.uint8)[[1] * 10], 500)
        return base_args(d, **{"-j": d / "ex_val.bin", "-v": 1}), ["ex_val.bin", "different kinds of shards"]
    if name == "unknown flag":
        return base_args(d) + ["--learning-rate", "3"], ["unknown flag '--learning-rate'"]
    if name == "non-numeric value":
        return base_args(d, **{"-b": "four"}), ["-b/--batch-size", "expects an integer", "'four'"]
    if name == "non-numeric float":
        return base_args(d) + ["-l", "1e-3x"], ["-l/--lr", "expects a number", "'1e-3x'"]
    if name == "non-finite value":
        return base_args(d) + ["-l", "nan"], ["-l/--lr", "finite"]
    if name == "missing value":
        return base_args(d) + ["--steps"], ["--steps", "needs a value"]
    if name == "unknown choice":
        return base_args(d) + ["--lr-schedule", "exp"], ["--lr-schedule", "constant, cosine, linear", "'exp'"]
    if name == "zero batch size":
        return base_args(d, **{"-b": 0}), ["-b", "must be >= 1"]
    if name == "stray argument":
        return base_args(d) + ["extra"], ["unexpected argument 'extra'"]
    if name == "parity batch T > maxT":
        write_parity_batch(d / "pb.bin", np.zeros((1, 70), np.int32), np.zeros((1, 70), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin"], \
            ["pb.bin", "T=70", "maxT=64"]
    if name == "parity batch token >= V":
        x = np.zeros((2, 8), np.int32)
        x[1, 3] = 999
        write_parity_batch(d / "pb.bin", x, np.zeros((2, 8), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--parity-out", d / "g.bin"], \
            ["pb.bin", "token id 999", "row 1 position 3"]
    if name == "parity losses without -o":
        write_parity_batch(d / "pb.bin", np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32))
        return ["--model", d / "model.bin", "--parity-batch", d / "pb.bin", "--steps", 2,
                "--parity-losses", d / "l.bin"], ["-o DIR"]
    if name == "resume without its model":
        run_trainer(*base_args(d), "-o", d / "run")
        (d / "run/model_000002.bin").unlink()
        return base_args(d, **{"--model": None}) + ["--resume", d / "run/state_000002.bin"], \
            ["state_000002.bin", "model_000002.bin", "missing"]
    if name == "resume from a non-state file":
        return base_args(d) + ["--resume", d / "train.bin"], ["training state", "train.bin", "magic number"]
    raise KeyError(name)


CASES = [
    "missing model", "truncated model", "wrong magic", "wrong version", "inconsistent dims",
    "token id >= V", "token id >= V in val", "shard too small", "truncated shard", "empty glob",
    "T > maxT", "example shard with wrong -t", "examples longer than the context", "mixed shard kinds", "unknown flag",
    "non-numeric value", "non-numeric float", "non-finite value", "missing value", "unknown choice",
    "zero batch size", "stray argument", "parity batch T > maxT", "parity batch token >= V",
    "parity losses without -o", "resume without its model", "resume from a non-state file",
]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_a_clear_error(files, name):
    args, want = case_args(files, name)
    r = run_trainer(*args, check=False)
    assert r.returncode == 1, f"{name}: exit {r.returncode} (negative = killed by a signal)\n{r.stderr}"
    err = r.stderr
    assert err.startswith("error: ") or "\nerror: " in err, f"{name}: no 'error:' line in\n{err}"
    for s in want:
        assert s in err, f"{name}: the message should mention {s!r}:\n{err}"
    for bad in ("Traceback", "Sanitizer", "Segmentation", "core dumped"):
        assert bad not in err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(files):
    out = files / "run"
    # a learning rate of 1e30 without clipping sends the weights to ~1e30 after step 1, and the
    # logits of step 2 overflow to inf - inf = NaN
    r = run_trainer(*base_args(files, **{"--steps": 6}), "-l", 1e30, "--grad-clip", 0, "--lr-schedule",
                    "constant", "-o", out, "--save-every", 1, check=False)
    assert r.returncode == 1, r.stderr
    assert "error: the loss is NaN at step 2" in r.stderr, r.stderr
    assert "last good checkpoint is" in r.stderr and "model_000001.bin" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", "model_000001.bin", "state_000001.bin"]
    read_checkpoint(out / "model_000001.bin")  # loads: finite and well-formed
    last = read_log(out / "log.jsonl")[-1]
    assert last["step"] == 2 and "error" in last and last["train_loss"] is None


def test_help_lists_every_flag_with_its_default(files):
    r = run_trainer("--help")
    for flag in ("-i, --train-data", "-j, --val-data", "-o, --output-dir", "-b, --batch-size",
                 "-t, --seq-len", "-l, --lr", "-v, --val-every", "-m, --val-batches", "-s, --sample-every",
                 "-g, --gen-tokens", "--model", "--steps", "--weight-decay", "--beta1", "--beta2", "--eps",
                 "--grad-clip", "--warmup", "--lr-schedule", "--min-lr-frac", "--seed", "--save-every",
                 "--resume", "--temperature", "--top-k", "--top-p", "--tokenizer", "--decay-params",
                 "--parity-batch", "--parity-out", "--parity-losses", "--threads"):
        assert flag in r.stdout, f"--help does not list {flag}"
    assert r.stdout.count("(default: ") >= 30
