"""Training with the CPU trainer: the optimizer against torch.optim.AdamW, determinism, resume.

What it checks (tiny model with random tensors, so every tensor trains):
  - 10 AdamW steps on one batch (`--parity-batch B --steps 10 --parity-losses L -o DIR`) with weight
    decay, global-norm clipping (active on some steps) and warmup + cosine decay give losses, logged
    gradient norms and parameters as close to torch.optim.AdamW driving dev.model.GPT in float64
    as PyTorch's own fp32 run is, up to the factor of tests/helpers/compare.assert_fp32_accurate
    (AdamW amplifies rounding, so a fixed tolerance would hold only for the BLAS kernels it was
    tuned on), except the key bias, whose true gradient is zero (see the test). Both
    --decay-params all and matrices, and a loss mask; the log's lr equals the schedule's.
  - Two runs with the same seed (token shards, validation, sampling) are bit-identical: model
    file, state file, and every logged loss, norm and sample; so are runs with 1, 2, 3 and 4
    threads (model and state bytes).
  - Training 10 steps equals training to step 5 (checkpoint), then resuming from
    state_000005.bin for 5 more: bit-identical losses, model and state files; on token shards and
    on example shards.
Run: python -m pytest -q tests/test_cpu_train.py
"""

import dataclasses
import shutil

import pytest

from dev.configs import NAMED_CONFIGS
from helpers import (check_adamw_steps_match_torch, check_samples_print_valid_utf8, example_data, log_values,
                     make_checkpoint, run_trainer, same_files, token_data, trainer)


# grad_clip sits inside the range of the gradient norms of these batches (1.4-1.7 and 1.8-2.2),
# so some steps are clipped and some are not.
@pytest.mark.parametrize("decay_params,masked,grad_clip", [("all", False, 1.5), ("matrices", True, 2.0)])
def test_adamw_steps_match_torch(tmp_path, decay_params, masked, grad_clip):
    check_adamw_steps_match_torch(tmp_path, NAMED_CONFIGS["tiny"], decay_params, masked, grad_clip)


def test_adamw_steps_with_untied_head(tmp_path):
    config = dataclasses.replace(NAMED_CONFIGS["tiny"], untied_head=True)
    check_adamw_steps_match_torch(tmp_path, config, "matrices", True, 2.0)


# ---- determinism and resume on shards -------------------------------------------------------

def train(tmp_path, out, data_args, steps, extra=()):
    return run_trainer("--model", tmp_path / "model.bin", *data_args, "-o", out, "--steps", steps,
                       "-l", 3e-3, "--warmup", 2, "--weight-decay", 0.05, "-v", 3, "-m", 2,
                       "-s", 4, "-g", 6, "--seed", 42, *extra)


def test_same_seed_is_bit_identical(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, seed=1, scale=0.05)
    data = token_data(tmp_path, config)
    train(tmp_path, tmp_path / "a", data, 8)
    train(tmp_path, tmp_path / "b", data, 8)
    assert same_files(tmp_path / "a/model_000008.bin", tmp_path / "b/model_000008.bin")
    assert same_files(tmp_path / "a/state_000008.bin", tmp_path / "b/state_000008.bin")
    a, b = log_values(tmp_path / "a/log.jsonl"), log_values(tmp_path / "b/log.jsonl")
    assert a == b
    assert sum(1 for s, sample, _ in a if sample is not None) == 2, "samples at steps 4 and 8"
    assert sum(1 for *_, v in a if v[2] is not None) == 3, "validation at steps 3, 6 and 8"
    # the thread count does not change a single bit: every parallel loop writes disjoint outputs,
    # every reduction runs in a fixed order, and sgemm works on tiles fixed by the shapes (the
    # wte gradient's 512 rows are 4 tiles, which 3 threads share unevenly). By construction this
    # holds for any OpenBLAS kernel; dev/check_determinism.py checks that by hand for each kernel.
    for threads in (1, 2, 3, 4):
        run = f"t{threads}"
        train(tmp_path, tmp_path / run, data, 8, extra=("--threads", threads))
        for name in ("model_000008.bin", "state_000008.bin"):
            assert same_files(tmp_path / "a" / name, tmp_path / run / name), f"{name}, {threads} threads"
        assert log_values(tmp_path / run / "log.jsonl") == a, run
    # nor with the classifier in chunks of 16 positions (d(wte) then sums over the chunks, in order)
    for threads in (1, 3):
        train(tmp_path, tmp_path / f"k{threads}", data, 8, extra=("--threads", threads, "--classifier-rows", 16))
    for name in ("model_000008.bin", "state_000008.bin"):
        assert same_files(tmp_path / "k1" / name, tmp_path / "k3" / name), f"{name}, chunked classifier"
    # a different seed changes the data order, hence the losses
    train(tmp_path, tmp_path / "c", data, 8, extra=("--seed", 43))
    assert log_values(tmp_path / "c/log.jsonl") != a


@pytest.mark.parametrize("kind", ["tokens", "examples", "untied-head"])
def test_resume_is_bit_identical(tmp_path, kind):
    config = NAMED_CONFIGS["tiny"]
    if kind == "untied-head":
        config = dataclasses.replace(config, untied_head=True)
    make_checkpoint(tmp_path / "model.bin", config, seed=2, scale=0.05)
    data = (example_data if kind == "examples" else token_data)(tmp_path, config)
    # straight through, checkpointing at step 5 as well
    train(tmp_path, tmp_path / "full", data, 10, extra=("--save-every", 5))
    # a new run directory that holds only the step-5 checkpoint and the log up to then,
    # plus a stale record of a step after 5 that resuming must drop
    part = tmp_path / "part"
    part.mkdir()
    for f in ("model_000005.bin", "state_000005.bin"):
        shutil.copy(tmp_path / "full" / f, part / f)
    lines = (tmp_path / "full/log.jsonl").read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if '"step": 6,' not in ln and not any(
        f'"step": {s},' in ln for s in range(7, 11))]
    (part / "log.jsonl").write_text("".join(keep) + '{"step": 7, "train_loss": 123.0}\n')
    r = run_trainer("--resume", part / "state_000005.bin", *data, "--steps", 10, "-l", 3e-3,
                    "--warmup", 2, "--weight-decay", 0.05, "-v", 3, "-m", 2, "-s", 4, "-g", 6,
                    "--seed", 42)
    assert "resume" in r.stdout
    for f in ("model_000010.bin", "state_000010.bin"):
        assert same_files(tmp_path / "full" / f, part / f), f"{f} differs after resuming"
    full, resumed = log_values(tmp_path / "full/log.jsonl"), log_values(part / "log.jsonl")
    assert resumed == full, "the resumed log must equal the straight run's, record for record"
    if kind == "examples":
        assert all(v[1] is not None for _, s, v in full if s is None), "train_acc is logged for example data"


def test_resume_rejects_a_mismatched_state(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, seed=2, scale=0.05)
    data = token_data(tmp_path, config)
    train(tmp_path, tmp_path / "run", data, 2)
    # the model beside the state was replaced: the checksum catches it
    make_checkpoint(tmp_path / "run/model_000002.bin", config, seed=9)
    r = run_trainer("--resume", tmp_path / "run/state_000002.bin", *data, "--steps", 4, check=False)
    assert r.returncode != 0 and "does not match" in r.stderr, r.stderr
    # a different batch geometry cannot continue the data order
    train(tmp_path, tmp_path / "run2", data, 2)
    r = run_trainer("--resume", tmp_path / "run2/state_000002.bin", *data[:-4], "-b", 2, "-t", 32,
                    "--steps", 4, "--seed", 42, check=False)
    assert r.returncode != 0 and "-b 4 -t 32" in r.stderr, r.stderr


# ---- samples on stdout ----------------------------------------------------------------------

def test_samples_print_valid_utf8_equal_to_the_log(tmp_path):
    """Printed samples are the log's text: token pieces joined, then each invalid part replaced by
    U+FFFD exactly as Python's decode(errors="replace") does, so a character split over two
    tokens prints whole and stdout is always valid UTF-8."""
    check_samples_print_valid_utf8(tmp_path, trainer())

