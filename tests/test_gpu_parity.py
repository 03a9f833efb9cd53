"""Parity of the CUDA trainer (train_gpt2_fp32.cu) with the PyTorch reference, transformers and
the CPU trainer, with TF32 off.

What it checks, on each backend (gpu: the real binary on a GPU, skipped without one; emu: the same
source in the CPU emulator, see tests/helpers/trainers.py), with a tiny model whose 16 tensors
are all random: one forward/backward of `--parity-batch B --parity-out G --tf32 0` gives
  - logits (B, T, Vp), loss and each of the 16 gradients, by name, as close to dev.model.GPT in
    float64 (and to transformers' GPT2LMHeadModel in float64, first V logit columns) as PyTorch's
    own fp32 computation is, up to the factor of tests/helpers/compare.assert_fp32_accurate: the
    rule of the CPU trainer's parity tests (fp32 throughout; only the order of the sums differs);
  - for both attention implementations (--attention fused and cublas), for plain batches, a
    loss mask, T shorter than the context and not a multiple of the kernels' 64-row tiles,
    the fused classifier over several chunks of positions (--classifier-rows 16), a model with an
    untied head (17 gradients), and a model without the QKV bias (whose gradient must then be
    exactly zero);
  - for head sizes 16, 32, 64 and 128 (the fused kernels' templates) and 24 and 15 (which only
    the cuBLAS path supports: --attention auto falls back to it, --attention fused is refused;
    C = 30 also takes the scalar fallbacks of the float4 kernels);
  - the CUDA trainer and the CPU trainer on the same batch, both within that rule;
  - with TF32 on (--tf32 1, the default), for each attention implementation (auto picks the
    tensor-core kernels) and the tensor-core head sizes: against the float64 reference, logits
    within 1e-2, the loss within 1e-3 relative and gradients within 1e-2 * max|g| (TF32 keeps 10
    mantissa bits, a relative error of ~5e-4 per product; measured in the emulator: ~1e-3 logits,
    ~5e-4 * max|g| gradients).
Run: python -m pytest -q tests/test_gpu_parity.py   (the gpu variants need a GPU)
"""

import dataclasses

import numpy as np
import pytest

from dev.checkpoint import PARAM_NAMES
from dev.configs import NAMED_CONFIGS
from dev.model import GPT, to_hf
from dev.parity_files import read_parity_grads, write_parity_batch
from helpers import (assert_close, BACKENDS, check_one_pass, cuda_trainer, fp32_reference, make_checkpoint,
                     reference_pass, run_trainer, transformers_pass)

TINY = NAMED_CONFIGS["tiny"]


def make_case(tmp_path, config, seed, B, T, mask_frac=None):
    """A random model and batch on disk; returns (model_path, batch_path, (x, y, mask))."""
    model_path = tmp_path / "model.bin"
    make_checkpoint(model_path, config, seed)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    mask = None
    if mask_frac is not None:
        mask = (rng.random((B, T)) < mask_frac).astype(np.int32)
        mask[0, -1] = 1
    batch_path = tmp_path / "batch.bin"
    write_parity_batch(batch_path, x, y, mask)
    return model_path, batch_path, (x, y, mask)


def run_parity(binary, model_path, batch_path, out_path, *extra):
    run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", out_path, *extra,
                binary=binary)
    return read_parity_grads(out_path)


def reference(model_path, x, y, mask):
    """(ref64, runs32): dev.model.GPT's forward/backward in float64 and its fp32 ensemble
    (tests/helpers/compare.fp32_reference)."""
    return fp32_reference(lambda: GPT.from_checkpoint(model_path), reference_pass(x, y, mask))


def check_against(got, ref, what, tf32=False):
    """fp32: the float64 rule of the CPU parity tests (tests/helpers/compare.check_one_pass).
    TF32: fixed tolerances against the float64 values, from TF32's error model (see the module
    docstring): logits within 1e-2, loss within 1e-3 relative, gradients within 1e-2 * max|g|."""
    ref64, runs32 = ref
    if not tf32:
        check_one_pass(got, ref64, runs32, what)
        return
    assert_close(f"logits vs {what}", got["logits"], ref64["logits"], 1e-2)
    rel = abs(got["loss"] - ref64["loss"]) / abs(ref64["loss"])
    assert rel <= 1e-3, f"loss {got['loss']:.9g} vs {what} {float(ref64['loss']):.9g}: rel {rel:.2e} > 1e-3"
    for name in got["grads"]:  # the 16 tensors, and lm_head when untied
        assert_close(f"d{name} vs {what}", got["grads"][name], ref64[name], 1e-2 * float(np.max(np.abs(ref64[name]))))


CASES = {
    "plain": dict(B=3, T=64, mask_frac=None),   # T = the model's context, one full 64-row tile
    "short_T": dict(B=2, T=17, mask_frac=None),  # T < maxT, not a multiple of any tile
    "masked": dict(B=4, T=23, mask_frac=0.3),    # loss over mask == 1 positions only
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attention", ["fused", "cublas"])
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_reference_model(tmp_path, backend, attention, case):
    binary = cuda_trainer(backend)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, TINY, seed=7, **CASES[case])
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0, "--attention", attention)
    check_against(got, reference(model_path, x, y, mask), "reference")
    assert np.all(got["grads"]["wte"][TINY.vocab_size:] == 0), "dwte rows V..Vp-1 must be exactly zero"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["plain", "masked"])
def test_parity_with_transformers(tmp_path, backend, case):
    binary = cuda_trainer(backend)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, TINY, seed=11, **CASES[case])
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0)
    ref64, runs32 = fp32_reference(lambda: to_hf(GPT.from_checkpoint(model_path)),
                                   transformers_pass(x, y, mask, TINY.vocab_size))
    check_one_pass(got, ref64, runs32, "transformers", V=TINY.vocab_size)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_classifier_in_chunks(tmp_path, backend):
    """The fused classifier over chunks of 16 positions (92 positions, the last chunk of 12)."""
    binary = cuda_trainer(backend)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, TINY, seed=5, B=4, T=23, mask_frac=0.4)
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0, "--classifier-rows", 16)
    check_against(got, reference(model_path, x, y, mask), "reference, classifier chunks of 16")


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_untied_head(tmp_path, backend):
    """An untied head: all 17 gradients, lm_head's included, against the reference."""
    binary = cuda_trainer(backend)
    config = dataclasses.replace(TINY, untied_head=True)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, config, seed=13, B=3, T=41, mask_frac=0.5)
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0, "--classifier-rows", 48)
    assert len(got["grads"]) == 17 and np.all(got["grads"]["lm_head"][config.vocab_size:] == 0)
    check_against(got, reference(model_path, x, y, mask), "reference, untied head")


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_without_qkv_bias(tmp_path, backend):
    binary = cuda_trainer(backend)
    config = dataclasses.replace(TINY, qkv_bias=False)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, config, seed=3, B=2, T=32)
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0)
    assert np.all(got["grads"]["qkvb"] == 0), "qkvb gets no gradient when the QKV bias is off"
    check_against(got, reference(model_path, x, y, mask), "reference")


# (n_embd, n_head): HS = 16, 32, 64, 128 run the fused templates; 24 only the cuBLAS path;
# 15 (C = 30, not a multiple of 4) also the kernels' scalar fallbacks for float4 paths
HEAD_SIZES = {16: (64, 4), 32: (64, 2), 64: (128, 2), 128: (128, 1), 24: (96, 4), 15: (30, 2)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hs", list(HEAD_SIZES))
def test_head_sizes(tmp_path, backend, hs):
    binary = cuda_trainer(backend)
    C, NH = HEAD_SIZES[hs]
    config = dataclasses.replace(TINY, n_layer=1, n_embd=C, n_head=NH, max_seq_len=80)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, config, seed=hs, B=2, T=70)
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 0, "--attention", "auto")
    check_against(got, reference(model_path, x, y, mask), f"reference (HS={hs})")
    if hs in (24, 15):
        r = run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", tmp_path / "g2.bin",
                        "--attention", "fused", binary=binary, check=False)
        assert r.returncode == 1 and "--attention fused" in r.stderr and f"HS={hs}" in r.stderr, r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["plain", "masked"])
def test_cuda_matches_cpu_trainer(tmp_path, backend, case):
    binary = cuda_trainer(backend)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, TINY, seed=21, **CASES[case])
    got = run_parity(binary, model_path, batch_path, tmp_path / "cuda.bin", "--tf32", 0)
    cpu = run_parity(None, model_path, batch_path, tmp_path / "cpu.bin")
    # each within the float64 rule, so the two agree within twice its budget
    ref = reference(model_path, x, y, mask)
    check_against(got, ref, "reference (CUDA)")
    check_against(cpu, ref, "reference (CPU trainer)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attention", ["auto", "fused-tf32", "cublas"])
def test_tf32_stays_close(tmp_path, backend, attention):
    """--tf32 1 (the default): auto picks the tensor-core attention for HS=32."""
    binary = cuda_trainer(backend)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, TINY, seed=5, **CASES["masked"])
    r = run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", tmp_path / "grads.bin",
                    "--tf32", 1, "--attention", attention, binary=binary)
    if attention == "auto":
        assert "fused-tf32" in r.stdout, "with --tf32 1, auto should choose the tensor-core attention"
    got = read_parity_grads(tmp_path / "grads.bin")
    check_against(got, reference(model_path, x, y, mask), f"reference (TF32, {attention})", tf32=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hs", [16, 64, 128])
def test_tf32_head_sizes(tmp_path, backend, hs):
    """The tensor-core kernels' templates (HS 16, 64; 32 above); HS=128 falls back to the fp32
    fused kernels under auto and is refused by --attention fused-tf32."""
    binary = cuda_trainer(backend)
    C, NH = HEAD_SIZES[hs]
    config = dataclasses.replace(TINY, n_layer=1, n_embd=C, n_head=NH, max_seq_len=80)
    model_path, batch_path, (x, y, mask) = make_case(tmp_path, config, seed=hs, B=2, T=70)
    got = run_parity(binary, model_path, batch_path, tmp_path / "grads.bin", "--tf32", 1, "--attention", "auto")
    check_against(got, reference(model_path, x, y, mask), f"reference (TF32, HS={hs})", tf32=True)
    if hs == 128:
        r = run_trainer("--model", model_path, "--parity-batch", batch_path, "--parity-out", tmp_path / "g2.bin",
                        "--attention", "fused-tf32", binary=binary, check=False)
        assert r.returncode == 1 and "--attention fused-tf32" in r.stderr and "HS=128" in r.stderr, r.stderr
