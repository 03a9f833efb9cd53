"""Parity of the CPU trainer with the PyTorch reference model and with transformers' GPT-2.

What it checks: on a tiny model whose 16 tensors are all random (so every tensor matters), one
forward and backward of `./train_gpt2 --model M --parity-batch BATCH --parity-out GRADS` gives
logits (B, T, Vp), loss and each of the 16 gradient tensors (compared by name) as close to
dev.model.GPT computed in float64 as PyTorch's own fp32 computation is, up to the factor of
tests/helpers/compare.assert_fp32_accurate; and likewise against transformers' GPT2LMHeadModel
loaded with the same weights (logits of the V real tokens), in float64 and in fp32. The rule
holds for any correct fp32 summation order, so no BLAS kernel can break it, while a wrong
formula lands far outside. Cases: plain batches, batches with a loss mask, T shorter than the
model's context, the fused classifier over several chunks of positions (--classifier-rows), a
model with an untied head (17 gradients, against both references), and a model with the QKV
bias off (qkvb's gradient must then be exactly zero).
A failure names the tensor, the worst element and both errors.
Run: python -m pytest -q tests/test_cpu_parity.py   (builds ./train_gpt2 with make if needed)
"""

import dataclasses

import numpy as np
import pytest

from dev.configs import NAMED_CONFIGS
from dev.model import GPT, to_hf
from dev.parity_files import read_parity_grads, write_parity_batch
from helpers import (check_one_pass, fp32_reference, make_checkpoint, reference_pass, run_trainer,
                     transformers_pass)



def c_parity(tmp_path, config, seed, B, T, mask_frac=None, extra=()):
    """Write a random model and batch, run the C trainer's parity mode (with the extra flags);
    return (paths, batch, result)."""
    model_path = tmp_path / "model.bin"
    make_checkpoint(model_path, config, seed)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    mask = None
    if mask_frac is not None:
        mask = (rng.random((B, T)) < mask_frac).astype(np.int32)
        mask[0, -1] = 1  # at least one scored position
    batch_path, grads_path = tmp_path / "batch.bin", tmp_path / "grads.bin"
    write_parity_batch(batch_path, x, y, mask)
    run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", grads_path, *extra)
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
    ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_pass(x, y, mask))
    check_one_pass(got, ref64, runs32, "reference")
    # the padded rows of wte never get a gradient
    V = config.vocab_size
    assert np.all(got["grads"]["wte"][V:] == 0), "dwte rows V..Vp-1 must be exactly zero"


@pytest.mark.parametrize("case", ["plain", "masked"])
def test_parity_with_transformers(tmp_path, case):
    config = NAMED_CONFIGS["tiny"]
    model_path, (x, y, mask), got = c_parity(tmp_path, config, seed=11, **CASES[case])
    ref64, runs32 = fp32_reference(lambda: to_hf(GPT.from_checkpoint(model_path)),
                                   transformers_pass(x, y, mask, config.vocab_size))
    check_one_pass(got, ref64, runs32, "transformers", V=config.vocab_size)


@pytest.mark.parametrize("rows", [16, 37])
def test_parity_with_classifier_in_chunks(tmp_path, rows):
    """The fused classifier over several chunks of positions (92 positions in chunks of 16, the
    last of 12; or of 37, the last of 18): logits, loss and every gradient stay within the rule,
    and the full logits written chunk by chunk are the reference's."""
    config = NAMED_CONFIGS["tiny"]
    model_path, (x, y, mask), got = c_parity(tmp_path, config, seed=5, B=4, T=23, mask_frac=0.4,
                                             extra=("--classifier-rows", rows))
    ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_pass(x, y, mask))
    check_one_pass(got, ref64, runs32, f"reference, classifier chunks of {rows}")


@pytest.mark.parametrize("against", ["reference", "transformers"])
def test_parity_with_untied_head(tmp_path, against):
    """An untied head (header[10] = 1): all 17 gradients, lm_head's included, within the rule,
    against the reference and against transformers' GPT-2 with tie_word_embeddings=False."""
    config = dataclasses.replace(NAMED_CONFIGS["tiny"], untied_head=True)
    model_path, (x, y, mask), got = c_parity(tmp_path, config, seed=13, B=3, T=41, mask_frac=0.5)
    assert list(got["grads"])[-1] == "lm_head" and len(got["grads"]) == 17
    V = config.vocab_size
    assert np.all(got["grads"]["lm_head"][V:] == 0), "the padded rows of lm_head never get a gradient"
    if against == "reference":
        ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_pass(x, y, mask))
        check_one_pass(got, ref64, runs32, "reference, untied head")
    else:
        hf = to_hf(GPT.from_checkpoint(model_path))
        assert not hf.config.tie_word_embeddings
        ref64, runs32 = fp32_reference(lambda: to_hf(GPT.from_checkpoint(model_path)),
                                       transformers_pass(x, y, mask, V))
        check_one_pass(got, ref64, runs32, "transformers, untied head", V=V)


def test_parity_without_qkv_bias(tmp_path):
    config = dataclasses.replace(NAMED_CONFIGS["tiny"], qkv_bias=False)
    model_path, (x, y, _), got = c_parity(tmp_path, config, seed=3, B=2, T=32)
    assert np.all(got["grads"]["qkvb"] == 0), "qkvb gets no gradient when the QKV bias is off"
    ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_pass(x, y, None))
    check_one_pass(got, ref64, runs32, "reference, no QKV bias")
