"""The research regularizers on the CPU trainer: dropout, weight decay toward init, weight noise.

What it checks:
  - dev/regularizers.py draws exactly the numbers of llmc/regularizers.h (through
    tests/regularizers_probe.c): dropout keys, thresholds, scales and factors bit for bit, weight
    noise bit for bit; and the numbers are what they claim (keep rate 1 - p, noise mean 0 and
    std sigma, different masks for different steps, layers and sites).
  - Dropout p = 0.1 (all four sites on; T = 64 and 17, attention's two paths): one
    forward/backward of `./train_gpt2 --parity-out` with
    --dropout equals dev.model.GPT with the trainer's masks (CounterDropout): logits, loss and
    each gradient within the float64 rule of tests/test_cpu_parity.py (the masks are identical,
    so only fp32 summation order differs). The same comparison with the masks of another seed
    fails: the test can tell the masks apart.
  - 10 AdamW steps on one batch with dropout, with weight decay toward init, with weight noise
    (sigma 0.01), with all three at once, and with the QKV bias off: the trainer's losses and
    parameters as close to torch.optim.AdamW driving the reference in float64 with the same
    regularizers (tests/helpers/reference.torch_train_steps) as PyTorch fp32 is, within the factor
    of tests/helpers/compare.assert_fp32_accurate (the rule of test_cpu_train.py).
    Decay toward init is also checked to differ from decay toward zero (so it is not a no-op).
  - Resume stays bit-identical with all of them on: 10 steps = 5 + resume 5 (model, state with
    the initial parameters, log); and a state without initial parameters cannot resume with
    --decay-toward-init 1 (clear error).
Run: python -m pytest -q tests/test_regularizers.py
"""

import dataclasses
import os
import subprocess

import numpy as np
import pytest
import torch

from dev.checkpoint import PARAM_NAMES, read_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.model import GPT
from dev.regularizers import (dropout_factor, dropout_key, dropout_scale, dropout_threshold, noise_key,
                              weight_noise)
from dev.train_state import read_train_state
from helpers import (assert_fp32_accurate, check_parity, compare_params, log_values, make_checkpoint,
                     near_zero_gradients, parity_case, read_log, reference_steps, reference_with_dropout,
                     REG_CASES, REPO, run_trainer, same_files, token_data, train_parity_steps)



# ---- the random numbers: C and Python agree ---------------------------------------------------

@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    exe = tmp_path_factory.mktemp("probe") / "regularizers_probe"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-I", REPO,
                        os.path.join(REPO, "tests/regularizers_probe.c"), "-o", str(exe), "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building the probe failed:\n{r.stderr}"
    return exe


def run_probe(probe, tmp_path, seed, step, layer, site, p, n, sigma):
    out = tmp_path / "probe.bin"
    r = subprocess.run([str(probe), str(seed), str(step), str(layer), str(site), repr(p), str(n),
                        repr(sigma), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    raw = out.read_bytes()
    dkey, nkey = np.frombuffer(raw[:16], dtype=np.uint64)
    threshold = int(np.frombuffer(raw[16:20], dtype=np.uint32)[0])
    scale = np.frombuffer(raw[20:24], dtype=np.float32)[0]
    body = np.frombuffer(raw[24:], dtype=np.float32)
    return int(dkey), int(nkey), threshold, scale, body[:n], body[n:]


@pytest.mark.parametrize("seed,step,layer,site,p,sigma", [
    (1337, 1, -1, 0, 0.1, 0.01), (0, 7, 0, 1, 0.5, 1.0), (2 ** 40 + 3, 123456, 5, 3, 0.03, 0.2)])
def test_python_draws_the_numbers_of_the_c_header(probe, tmp_path, seed, step, layer, site, p, sigma):
    n = 200_000
    dkey, nkey, threshold, scale, factors, noise = run_probe(probe, tmp_path, seed, step, layer, site,
                                                             p, n, sigma)
    assert dkey == dropout_key(seed, step, layer, site)
    assert nkey == noise_key(seed, step)
    assert threshold == dropout_threshold(p) and scale == dropout_scale(p)
    py_factors = dropout_factor(dkey, n, p)
    assert np.array_equal(factors, py_factors), \
        f"{int((factors != py_factors).sum())} of {n} dropout factors differ"
    kept = factors != 0
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n), kept.mean()
    # weight noise: the first n flat indices of a model big enough to hold them
    cfg = dataclasses.replace(NAMED_CONFIGS["tiny"], vocab_size=4096)
    py_noise = np.concatenate([a.ravel() for a in weight_noise(cfg, seed, step, sigma).values()])[:n]
    assert np.array_equal(noise, py_noise), \
        f"weight noise differs at {int((noise != py_noise).sum())} of {n} elements"
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std() / sigma - 1) < 0.01


def test_masks_differ_by_step_layer_and_site():
    masks = {}
    for key in [(1, 0, 1), (2, 0, 1), (1, 1, 1), (1, 0, 2), (1, -1, 0)]:
        step, layer, site = key
        masks[key] = dropout_factor(dropout_key(5, step, layer, site), 10_000, 0.5)
    keys = list(masks)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            same = (masks[keys[i]] == masks[keys[j]]).mean()
            assert 0.45 < same < 0.55, f"masks {keys[i]} and {keys[j]} agree on {same:.0%}: not independent"


def test_weight_noise_skips_padding_and_a_disabled_qkv_bias():
    cfg = dataclasses.replace(NAMED_CONFIGS["tiny"], qkv_bias=False)
    noise = weight_noise(cfg, 3, 1, 0.01)
    assert np.all(noise["wte"][cfg.vocab_size:] == 0) and np.all(noise["wte"][:cfg.vocab_size] != 0)
    assert np.all(noise["qkvb"] == 0) and np.all(noise["lnfb"] != 0)


# ---- dropout parity -------------------------------------------------------------------------

# T = 64 takes attention's sgemm path in the CPU trainer, T = 17 its loops (ATTENTION_BLAS_MIN_T)
@pytest.mark.parametrize("T", [64, 17])
def test_dropout_forward_backward_matches_reference(tmp_path, T):
    config, p, seed = NAMED_CONFIGS["tiny"], 0.1, 4242
    model_path, x, y, got = parity_case(tmp_path, config, 7, 3, T, ["--dropout", p, "--seed", seed])
    ref = reference_with_dropout(model_path, x, y, p, seed)
    check_parity(got, ref, "dropout 0.1")
    # the masks matter: without dropout, or with another seed's masks, the result is different
    plain = GPT.from_checkpoint(model_path)
    plain_logits, _ = plain(torch.from_numpy(x).long())
    assert np.abs(got["logits"] - plain_logits.detach().numpy()).max() > 1e-2
    with pytest.raises(AssertionError, match="error against float64"):
        check_parity(got, reference_with_dropout(model_path, x, y, p, seed + 1), "another seed's masks")


def test_dropout_is_off_for_validation(tmp_path):
    """With --dropout the validation loss is that of the clean model: train 1 step at lr 0 and
    compare the logged val loss with and without dropout (identical)."""
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, 1)
    data = token_data(tmp_path, config)
    vals = []
    for p in (0.0, 0.3):
        out = tmp_path / f"run{p}"
        run_trainer("--model", tmp_path / "model.bin", *data, "-o", out, "--steps", 1, "-l", 0.0,
                    "-v", 1, "-m", 2, "-s", 0, "--dropout", p)
        rec = [r for r in read_log(out / "log.jsonl") if "val_loss" in r][0]
        vals.append((rec["val_loss"], rec["train_loss"]))
    assert vals[0][0] == vals[1][0], f"val loss changed with dropout: {vals}"
    assert vals[0][1] != vals[1][1], f"train loss did not change with dropout: {vals}"


# ---- 10 AdamW steps with each regularizer ------------------------------------------------------

@pytest.mark.parametrize("case", list(REG_CASES))
def test_adamw_steps_with_regularizers_match_torch(tmp_path, case):
    config = NAMED_CONFIGS["tiny"]
    if case == "no-qkv-bias":
        config = dataclasses.replace(config, qkv_bias=False)
    reg = REG_CASES[case]
    model_path, xy, c_losses, c_params = train_parity_steps(tmp_path, config, reg)
    ref64, runs32 = reference_steps(model_path, xy, reg)
    assert_fp32_accurate(f"losses ({case})", c_losses, ref64, runs32, key="losses")
    compare_params(c_params, ref64, runs32, config, case, near_zero_gradients(model_path, *xy, **reg))
    if case == "no-qkv-bias":
        assert np.all(c_params["qkvb"] == 0), "qkvb must stay exactly zero without a QKV bias"
    if case == "decay-toward-init":
        # not a no-op: decay toward zero ends somewhere else, far outside the tolerance
        plain64, _ = reference_steps(model_path, xy, {})
        diff = max(np.abs(plain64[n] - ref64[n]).max() for n in PARAM_NAMES)
        assert diff > 1e-3, f"decay toward init vs toward zero differ by only {diff:.2e}"


@pytest.mark.parametrize("flag,value", [("-l", 1.001e-3), ("--beta2", 0.951), ("--eps", 1e-7)])
def test_the_float64_rule_catches_a_slightly_wrong_optimizer(tmp_path, flag, value):
    """The tolerance can fail: a trainer run with lr 0.1% off, beta2 0.951 or eps 1e-7 against the
    reference with the right values is outside it."""
    config = NAMED_CONFIGS["tiny"]
    model_path, xy, _, c_params = train_parity_steps(tmp_path, config, {}, extra=[flag, value])
    ref64, runs32 = reference_steps(model_path, xy, {})
    with pytest.raises(AssertionError, match="error against float64"):
        compare_params(c_params, ref64, runs32, config, f"{flag} {value}", near_zero_gradients(model_path, *xy))


# ---- resume with everything on --------------------------------------------------------------

def test_resume_is_bit_identical_with_all_regularizers(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, 0)
    data = token_data(tmp_path, config)
    flags = ["-l", 3e-3, "--warmup", 2, "--weight-decay", 0.1, "-v", 3, "-m", 2, "-s", 4, "-g", 6,
             "--dropout", 0.1, "--decay-toward-init", 1, "--weight-noise", 0.01, "--seed", 42]
    full, part = tmp_path / "full", tmp_path / "part"
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", full, "--steps", 10, *flags)
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", part, "--steps", 10,
                "--save-every", 5, *flags)
    # keep only the step-5 pair, then resume from it
    for f in part.glob("*_000010.bin"):
        f.unlink()
    run_trainer("--resume", part / "state_000005.bin", *data, *flags)
    st = read_train_state(part / "state_000005.bin")
    assert st["has_init_params"] == 1
    _, init = read_checkpoint(tmp_path / "model.bin")
    assert np.array_equal(st["init_params"], np.concatenate([init[n].ravel() for n in PARAM_NAMES])), \
        "the state file must hold the parameters before step 1"
    for name in ("model_000010.bin", "state_000010.bin"):
        assert same_files(full / name, part / name), f"{name} differs after resume"
    assert log_values(full / "log.jsonl") == log_values(part / "log.jsonl")


def test_decay_toward_init_cannot_resume_a_state_without_initial_values(tmp_path):
    config = NAMED_CONFIGS["tiny"]
    make_checkpoint(tmp_path / "model.bin", config, 0)
    data = token_data(tmp_path, config)
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", tmp_path / "run", "--steps", 2,
                "-v", 0, "-s", 0, "--weight-decay", 0.1)
    r = run_trainer("--resume", tmp_path / "run" / "state_000002.bin", *data, "--steps", 4,
                    "-v", 0, "-s", 0, "--weight-decay", 0.1, "--decay-toward-init", 1, check=False)
    assert r.returncode == 1 and "holds no initial parameters" in r.stderr, r.stderr


@pytest.mark.parametrize("flag,value,needle", [
    ("--dropout", "1", "--dropout must be in [0, 1)"),
    ("--dropout", "-0.1", "--dropout must be in [0, 1)"),
    ("--weight-noise", "-1", "--weight-noise must be"),
    ("--decay-toward-init", "2", "--decay-toward-init must be 0 or 1"),
])
def test_bad_regularizer_values(tmp_path, flag, value, needle):
    r = run_trainer("--model", tmp_path / "missing.bin", flag, value, check=False)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
