"""Parity of the CPU trainer with the PyTorch reference model and with transformers' GPT-2.

What it checks: on a tiny model whose 16 tensors are all random (so every tensor matters), one
forward and backward of `./train_gpt2 --model M --parity-batch BATCH --parity-out GRADS` gives
  - logits (B, T, Vp) within 1e-4 max abs of dev.model.GPT's, and the first V columns within
    1e-4 of transformers' GPT2LMHeadModel loaded with the same weights,
  - the loss within 1e-5 relative of both,
  - each of the 16 gradient tensors, compared by name, within 1e-4 * max|g| max abs of both
    (fp32 sums taken in another order differ by a few ulp of the largest terms),
for plain batches, batches with a loss mask, T shorter than the model's context, and a model with
the QKV bias off (qkvb's gradient must then be exactly zero). A failure names the tensor and the
worst element (see tests/test_cpu_helpers.assert_close).
Run: python -m pytest -q tests/test_cpu_parity.py   (builds ./train_gpt2 with make if needed)
"""

import dataclasses

import numpy as np
import pytest
import torch

from dev.checkpoint import PARAM_NAMES, write_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.model import GPT, cross_entropy_loss, to_hf
from dev.parity_files import read_parity_grads, write_parity_batch
from test_cpu_helpers import assert_close, grad_tolerance, hf_grads, run_trainer
from conftest import random_params

LOGIT_ATOL = 1e-4
LOSS_RTOL = 1e-5


def c_parity(tmp_path, config, seed, B, T, mask_frac=None):
    """Write a random model and batch, run the C trainer's parity mode; return (paths, batch, result)."""
    model_path = tmp_path / "model.bin"
    write_checkpoint(model_path, config, random_params(config, seed))
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    mask = None
    if mask_frac is not None:
        mask = (rng.random((B, T)) < mask_frac).astype(np.int32)
        mask[0, -1] = 1  # at least one scored position
    batch_path, grads_path = tmp_path / "batch.bin", tmp_path / "grads.bin"
    write_parity_batch(batch_path, x, y, mask)
    run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", grads_path)
    return model_path, (x, y, mask), read_parity_grads(grads_path)


CASES = {
    "plain": dict(B=3, T=64, mask_frac=None),          # T = the model's full context
    "short_T": dict(B=2, T=17, mask_frac=None),        # T < maxT, odd sizes
    "masked": dict(B=4, T=23, mask_frac=0.3),          # loss over mask == 1 positions only
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_reference_model(tmp_path, case):
    config = NAMED_CONFIGS["tiny"]
    model_path, (x, y, mask), got = c_parity(tmp_path, config, seed=7, **CASES[case])
    model = GPT.from_checkpoint(model_path)
    logits, loss = model(torch.from_numpy(x).long(), torch.from_numpy(y).long(),
                         None if mask is None else torch.from_numpy(mask))
    loss.backward()
    assert_close("logits", got["logits"], logits.detach().numpy(), LOGIT_ATOL)
    rel = abs(got["loss"] - loss.item()) / abs(loss.item())
    assert rel <= LOSS_RTOL, f"loss {got['loss']:.9g} vs reference {loss.item():.9g}: rel {rel:.2e}"
    ref = model.grads_numpy()
    for name in PARAM_NAMES:
        assert_close(f"d{name}", got["grads"][name], ref[name], grad_tolerance(ref[name]))
    # the padded rows of wte never get a gradient
    V = config.vocab_size
    assert np.all(got["grads"]["wte"][V:] == 0), "dwte rows V..Vp-1 must be exactly zero"


@pytest.mark.parametrize("case", ["plain", "masked"])
def test_parity_with_transformers(tmp_path, case):
    config = NAMED_CONFIGS["tiny"]
    model_path, (x, y, mask), got = c_parity(tmp_path, config, seed=11, **CASES[case])
    hf = to_hf(GPT.from_checkpoint(model_path))
    hf.zero_grad()
    V = config.vocab_size
    hf_logits = hf(torch.from_numpy(x).long()).logits  # (B, T, V)
    loss = cross_entropy_loss(hf_logits, torch.from_numpy(y).long(), V,
                              None if mask is None else torch.from_numpy(mask))
    loss.backward()
    assert_close("logits[:, :, :V] vs transformers", got["logits"][..., :V],
                 hf_logits.detach().numpy(), LOGIT_ATOL)
    rel = abs(got["loss"] - loss.item()) / abs(loss.item())
    assert rel <= LOSS_RTOL, f"loss {got['loss']:.9g} vs transformers {loss.item():.9g}: rel {rel:.2e}"
    ref = hf_grads(hf)
    for name in PARAM_NAMES:
        assert_close(f"d{name} vs transformers", got["grads"][name], ref[name], grad_tolerance(ref[name]))


def test_parity_without_qkv_bias(tmp_path):
    config = dataclasses.replace(NAMED_CONFIGS["tiny"], qkv_bias=False)
    model_path, (x, y, _), got = c_parity(tmp_path, config, seed=3, B=2, T=32)
    model = GPT.from_checkpoint(model_path)
    _, loss = model(torch.from_numpy(x).long(), torch.from_numpy(y).long())
    loss.backward()
    ref = model.grads_numpy()
    assert np.all(got["grads"]["qkvb"] == 0), "qkvb gets no gradient when the QKV bias is off"
    assert abs(got["loss"] - loss.item()) / loss.item() <= LOSS_RTOL
    for name in PARAM_NAMES:
        assert_close(f"d{name}", got["grads"][name], ref[name], grad_tolerance(ref[name]))
