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

import shutil

import numpy as np
import pytest

from dev.checkpoint import PARAM_NAMES, read_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.model import GPT
from dev.parity_files import read_parity_losses, write_parity_batch
from helpers import (ADAMW_OPT, ADAMW_STEPS, assert_close, assert_fp32_accurate,
                     check_samples_print_valid_utf8, example_data, fp32_reference, log_values, lr_at,
                     make_checkpoint, optimizer_flags, read_log, run_trainer, same_files, step_records,
                     token_data, torch_train_steps, trainer)


# grad_clip sits inside the range of the gradient norms of these batches (1.4-1.7 and 1.8-2.2),
# so some steps are clipped and some are not.
@pytest.mark.parametrize("decay_params,masked,grad_clip", [("all", False, 1.5), ("matrices", True, 2.0)])
def test_adamw_steps_match_torch(tmp_path, decay_params, masked, grad_clip):
    config = NAMED_CONFIGS["tiny"]
    model_path = tmp_path / "model.bin"
    make_checkpoint(model_path, config, seed=5, scale=0.05)
    rng = np.random.default_rng(9)
    B, T = 4, 32
    x = rng.integers(0, config.vocab_size, (B, T))
    y = rng.integers(0, config.vocab_size, (B, T))
    mask = (rng.random((B, T)) < 0.5).astype(np.int32) if masked else None
    write_parity_batch(tmp_path / "batch.bin", x, y, mask)
    out = tmp_path / "run"
    run_trainer("--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--steps", ADAMW_STEPS,
                "--parity-losses", tmp_path / "losses.bin", "-o", out,
                *optimizer_flags(**ADAMW_OPT, grad_clip=grad_clip, decay_params=decay_params))
    c_losses = read_parity_losses(tmp_path / "losses.bin")

    def reference_run(model):
        losses, norms = torch_train_steps(model, x, y, ADAMW_STEPS, decay_params=decay_params, mask=mask,
                                          grad_clip=grad_clip, **ADAMW_OPT)
        return dict(model.params_numpy(), losses=losses, norms=norms)

    ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_run)
    ref_norms = ref64["norms"]
    assert (ref_norms > grad_clip).any() and (ref_norms < grad_clip).any(), \
        f"the test should clip on some steps and not on others; norms {ref_norms}"
    assert_fp32_accurate("losses", c_losses, ref64, runs32)

    log = step_records(read_log(out / "log.jsonl"))
    assert [r["step"] for r in log] == list(range(1, ADAMW_STEPS + 1))
    want_lr = [lr_at(s, ADAMW_OPT["lr"], ADAMW_OPT["warmup"], ADAMW_STEPS, ADAMW_OPT["schedule"],
                     ADAMW_OPT["min_lr_frac"]) for s in range(1, ADAMW_STEPS + 1)]
    assert_close("logged lr", [r["lr"] for r in log], want_lr, 1e-9)
    assert_fp32_accurate("norms", [r["grad_norm"] for r in log], ref64, runs32)
    # %.9g in the log round-trips float32 exactly
    assert np.array_equal(np.float32([r["train_loss"] for r in log]), c_losses)

    _, c_params = read_checkpoint(out / f"model_{ADAMW_STEPS:06d}.bin")
    C = config.n_embd
    for name in PARAM_NAMES:
        keep = None
        if name == "qkvb":
            # The key bias (columns C..2C) has a true gradient of zero: q.(k + b) adds the same
            # q.b to every score of a row, and softmax ignores that. Its computed gradient is
            # rounding noise, which AdamW normalizes into steps of up to ~lr in either direction,
            # so two correct implementations (and float64) drift apart there by up to lr * steps.
            # Elsewhere the float64 comparison holds.
            assert_close("qkvb key block", c_params[name][:, C:2 * C], ref64[name][:, C:2 * C],
                         ADAMW_OPT["lr"] * ADAMW_STEPS)
            keep = np.ones(c_params[name].shape, dtype=bool)
            keep[:, C:2 * C] = False
        assert_fp32_accurate(f"{name} after {ADAMW_STEPS} steps", c_params[name], ref64, runs32, keep, key=name)


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
    # every reduction runs in a fixed order, and sgemm works on row tiles fixed by the shapes (the
    # wte gradient's 512 rows are 4 tiles, which 3 threads share unevenly). By construction this
    # holds for any OpenBLAS kernel; dev/check_determinism.py checks that by hand for each kernel.
    for threads in (1, 2, 3, 4):
        run = f"t{threads}"
        train(tmp_path, tmp_path / run, data, 8, extra=("--threads", threads))
        for name in ("model_000008.bin", "state_000008.bin"):
            assert same_files(tmp_path / "a" / name, tmp_path / run / name), f"{name}, {threads} threads"
        assert log_values(tmp_path / run / "log.jsonl") == a, run
    # a different seed changes the data order, hence the losses
    train(tmp_path, tmp_path / "c", data, 8, extra=("--seed", 43))
    assert log_values(tmp_path / "c/log.jsonl") != a


@pytest.mark.parametrize("kind", ["tokens", "examples"])
def test_resume_is_bit_identical(tmp_path, kind):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, seed=2, scale=0.05)
    data = (token_data if kind == "tokens" else example_data)(tmp_path, config)
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

