"""Training with the CUDA trainer: AdamW against torch, determinism, resume (also across trainers),
divergence and GPU-specific errors.

What it checks, on each backend (gpu: the real binary on a GPU, skipped without one; emu: the
same source in the CPU emulator, see tests/helpers/trainers.py), tiny model, --tf32 0:
  - 10 AdamW steps on one batch (`--parity-batch --steps 10 --parity-losses`) with weight decay,
    clipping active on some steps and warmup + cosine give losses, logged gradient norms and
    parameters as close to torch.optim.AdamW in float64 as PyTorch fp32 is, within the factor of
    tests/helpers/compare.assert_fp32_accurate (the key bias, whose true gradient is zero, within
    lr * steps): the CPU trainer's test, see tests/test_cpu_train.py for the reasoning;
  - two runs with the same seed (token shards, validation, sampling) are bit-identical (model,
    state, every logged value and sample), with TF32 off and on: the kernels use no atomics and
    reduce in fixed order;
  - 10 steps straight equal 5 steps, a checkpoint, and 5 more after --resume, bit for bit;
  - resume across trainers: a run trained to step 5 by one trainer and resumed by the other to
    step 10 matches the CPU trainer's straight 10-step run: losses within 1e-4, parameters within
    1e-4 (lr = 3e-3, five steps: a few percent of one step; the key bias within lr * steps);
  - a NaN loss stops training with the step named, exit 1, and the last good checkpoint kept;
    parameters that overflow in an update stop the run the same way; an output folder that another
    trainer holds is refused; printed samples are the log's text, valid UTF-8 (the CPU tests
    have the details);
  - no GPU and out of GPU memory give a clear message and exit 1 (emu only: it can pretend
    either with CUDA_EMU_NO_GPU=1 and CUDA_EMU_MAX_ALLOC; test_cuda_build.py checks the no-GPU
    message of the real binary on a machine without one).
Run: python -m pytest -q tests/test_gpu_train.py   (the gpu variants need a GPU)
"""

import shutil

import numpy as np
import pytest

from dev.checkpoint import read_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.parity_files import write_parity_batch
from helpers import (assert_run_within_spread, BACKENDS, check_adamw_steps_match_torch,
                     check_samples_print_valid_utf8, cuda_trainer, example_data, FP32_PERTURBATION_SEEDS,
                     log_values, make_checkpoint, read_log, run_trainer, same_files, step_records, token_data,
                     write_perturbed_checkpoint)

TINY = NAMED_CONFIGS["tiny"]
TRAIN_LR = 3e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decay_params,masked,grad_clip", [("all", False, 1.5), ("matrices", True, 2.0)])
def test_adamw_steps_match_torch(tmp_path, backend, decay_params, masked, grad_clip):
    check_adamw_steps_match_torch(tmp_path, TINY, decay_params, masked, grad_clip, binary=cuda_trainer(backend),
                                  extra=("--tf32", 0))


def train(binary, tmp_path, out, data_args, steps, extra=(), tf32=0):
    """tests/test_cpu_train.py's training run, on `binary` (None = the CPU trainer)."""
    args = ["--model", tmp_path / "model.bin", *data_args, "-o", out, "--steps", steps, "-l", TRAIN_LR,
            "--warmup", 2, "--weight-decay", 0.05, "-v", 3, "-m", 2, "-s", 4, "-g", 6, "--seed", 42, *extra]
    if binary is not None:
        args += ["--tf32", tf32]
    return run_trainer(*args, binary=binary)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tf32", [0, 1])
def test_same_seed_is_bit_identical(tmp_path, backend, tf32):
    binary = cuda_trainer(backend)
    make_checkpoint(tmp_path / "model.bin", TINY, seed=1, scale=0.05)
    data = token_data(tmp_path, TINY)
    train(binary, tmp_path, tmp_path / "a", data, 8, tf32=tf32)
    train(binary, tmp_path, tmp_path / "b", data, 8, tf32=tf32)
    assert same_files(tmp_path / "a/model_000008.bin", tmp_path / "b/model_000008.bin")
    assert same_files(tmp_path / "a/state_000008.bin", tmp_path / "b/state_000008.bin")
    a, b = log_values(tmp_path / "a/log.jsonl"), log_values(tmp_path / "b/log.jsonl")
    assert a == b
    assert sum(1 for _, sample, _ in a if sample is not None) == 2, "samples at steps 4 and 8"
    assert sum(1 for *_, v in a if v[2] is not None) == 3, "validation at steps 3, 6 and 8"
    header = read_log(tmp_path / "a/log.jsonl")[0]
    assert header["trainer"] == "train_gpt2fp32cu" and header["config"]["tf32"] == tf32
    assert header["config"]["attention_kernels"] == ("fused-tf32" if tf32 else "fused")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["tokens", "examples"])
def test_resume_is_bit_identical(tmp_path, backend, kind):
    binary = cuda_trainer(backend)
    make_checkpoint(tmp_path / "model.bin", TINY, seed=2, scale=0.05)
    data = (token_data if kind == "tokens" else example_data)(tmp_path, TINY)
    train(binary, tmp_path, tmp_path / "full", data, 10, extra=("--save-every", 5))
    part = tmp_path / "part"
    part.mkdir()
    for f in ("model_000005.bin", "state_000005.bin"):
        shutil.copy(tmp_path / "full" / f, part / f)
    lines = (tmp_path / "full/log.jsonl").read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if not any(f'"step": {s},' in ln for s in range(6, 11))]
    (part / "log.jsonl").write_text("".join(keep))
    r = run_trainer("--resume", part / "state_000005.bin", *data, "--steps", 10, "-l", TRAIN_LR, "--warmup", 2,
                    "--weight-decay", 0.05, "-v", 3, "-m", 2, "-s", 4, "-g", 6, "--seed", 42, "--tf32", 0,
                    binary=binary)
    assert "resume" in r.stdout
    for f in ("model_000010.bin", "state_000010.bin"):
        assert same_files(tmp_path / "full" / f, part / f), f"{f} differs after resuming"
    assert log_values(part / "log.jsonl") == log_values(tmp_path / "full/log.jsonl")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first", ["cpu", "cuda"])
def test_resume_across_trainers(tmp_path, backend, first):
    """One trainer runs 10 steps checkpointing at 5 (so the schedule spans 10); the other resumes
    its step-5 checkpoint to step 10. Both are compared with the CPU trainer's straight run."""
    binary = cuda_trainer(backend)
    make_checkpoint(tmp_path / "model.bin", TINY, seed=4, scale=0.05)
    data = token_data(tmp_path, TINY)
    train(None, tmp_path, tmp_path / "cpu", data, 10, extra=("--save-every", 5))
    run1, run2 = (None, binary) if first == "cpu" else (binary, None)
    src = tmp_path / "cpu"
    if run1 is not None:
        src = tmp_path / "first"
        train(run1, tmp_path, src, data, 10, extra=("--save-every", 5))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in ("model_000005.bin", "state_000005.bin"):
        shutil.copy(src / f, mixed / f)
    lines = (src / "log.jsonl").read_text().splitlines(keepends=True)
    (mixed / "log.jsonl").write_text("".join(ln for ln in lines if not any(f'"step": {s},' in ln for s in range(6, 11))))
    args = ["--resume", mixed / "state_000005.bin", *data, "--steps", 10, "-l", TRAIN_LR, "--warmup", 2,
            "--weight-decay", 0.05, "-v", 3, "-m", 2, "-s", 4, "-g", 6, "--seed", 42]
    if run2 is not None:
        args += ["--tf32", 0]
    r = run_trainer(*args, binary=run2)
    assert "resume" in r.stdout
    ref = step_records(read_log(tmp_path / "cpu/log.jsonl"))
    got = step_records(read_log(mixed / "log.jsonl"))
    assert [x["step"] for x in got] == list(range(1, 11)), "the log continues where the state left off"
    assert [x["step"] for x in got if "val_loss" in x] == [3, 6, 9, 10]
    assert [x["step"] for x in ref if "val_loss" in x] == [3, 6, 9, 10]
    spread = []
    for seed in FP32_PERTURBATION_SEEDS:  # the CPU trainer's straight run from starts one ulp away
        d = tmp_path / f"spread{seed}"
        d.mkdir()
        write_perturbed_checkpoint(tmp_path / "model.bin", d / "model.bin", seed)
        train(None, d, d / "cpu", data, 10)
        spread.append(d / "cpu")
    assert_run_within_spread(f"after resuming ({first} first)", mixed, tmp_path / "cpu", spread, 10, TRAIN_LR)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, backend):
    binary = cuda_trainer(backend)
    make_checkpoint(tmp_path / "model.bin", TINY, seed=0, scale=0.05)
    rng = np.random.default_rng(0)
    from dev.shards import write_token_shard
    write_token_shard(tmp_path / "train.bin", rng.integers(0, TINY.vocab_size, 3000))
    out = tmp_path / "run"
    # lr 1e30 without clipping: weights ~1e30 after step 1, the logits of step 2 overflow to NaN
    r = run_trainer("--model", tmp_path / "model.bin", "-i", tmp_path / "train.bin", "-b", 2, "-t", 32,
                    "--steps", 6, "-v", 0, "-s", 0, "-l", 1e30, "--grad-clip", 0, "--lr-schedule", "constant",
                    "-o", out, "--save-every", 1, binary=binary, check=False)
    assert r.returncode == 1, r.stderr
    assert "at step 2" in r.stderr and "training diverged" in r.stderr, r.stderr
    assert "model_000001.bin" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", "model_000001.bin", "state_000001.bin",
                                                     "train.lock"]
    read_checkpoint(out / "model_000001.bin")
    last = read_log(out / "log.jsonl")[-1]
    assert last["step"] == 2 and "error" in last


@pytest.mark.parametrize("backend", BACKENDS)
def test_overflowing_parameters_stop_and_the_folder_is_locked(tmp_path, backend):
    """The driver-level guarantees of the CPU trainer hold for the CUDA trainer (tests/
    test_cpu_errors.py and tests/test_cpu_files.py have the details): parameters that overflow in
    the first update stop the run before any save, a folder in use is refused, and samples print
    as the log's text."""
    binary = cuda_trainer(backend)
    make_checkpoint(tmp_path / "model.bin", TINY, seed=0, scale=0.05)
    rng = np.random.default_rng(0)
    from dev.shards import write_token_shard
    write_token_shard(tmp_path / "train.bin", rng.integers(0, TINY.vocab_size, 3000))
    args = ["--model", tmp_path / "model.bin", "-i", tmp_path / "train.bin", "-j", "", "-b", 2, "-t", 32,
            "-v", 0, "-s", 0, "--tf32", 0]
    r = run_trainer(*args, "--steps", 1, "-l", "1e38", "-c", 10, "-o", tmp_path / "big", binary=binary,
                    check=False)
    assert r.returncode == 1 and "the parameters after the update are" in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["log.jsonl", "train.lock"]
    import fcntl
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "train.lock", "w") as held:  # this test holds the folder, as a running trainer would
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run_trainer(*args, "--steps", 1, "-o", out, binary=binary, check=False)
    assert r.returncode == 1 and f"output folder {out} is in use by another trainer" in r.stderr, r.stderr
    assert not (out / "log.jsonl").exists()


def test_no_gpu_and_out_of_memory_messages(tmp_path):
    binary = cuda_trainer("emu")
    make_checkpoint(tmp_path / "model.bin", TINY, seed=0, scale=0.05)
    write_parity_batch(tmp_path / "batch.bin", np.zeros((2, 8), np.int32), np.zeros((2, 8), np.int32))
    args = ["--model", tmp_path / "model.bin", "--parity-batch", tmp_path / "batch.bin", "--parity-out", tmp_path / "g.bin"]
    r = run_trainer(*args, binary=binary, check=False, env={"CUDA_EMU_NO_GPU": "1"})
    assert r.returncode == 1 and "error: no CUDA GPU is available" in r.stderr and "./train_gpt2" in r.stderr, r.stderr
    # allocations over 100 kB fail: the first big one names its size and suggests -b / -t
    r = run_trainer(*args, binary=binary, check=False, env={"CUDA_EMU_MAX_ALLOC": "100000"})
    assert r.returncode == 1, r.stderr
    assert "error: cannot allocate" in r.stderr and "MiB of GPU memory" in r.stderr, r.stderr
    assert "smaller batch (-b) or sequence length (-t)" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_samples_print_valid_utf8_equal_to_the_log(tmp_path, backend):
    check_samples_print_valid_utf8(tmp_path, cuda_trainer(backend), extra=("--tf32", 0))
