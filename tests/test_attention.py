"""Attention maps (dev/attention.py) and the trainer's attention weights they are held to.

What it checks:
- the CPU trainer's own attention buffer on a parity batch (`--parity-attention`, every layer
  and head, T below and above the sgemm path's ATTENTION_BLAS_MIN_T = 32) equals the reference
  model's weights (dev.model.GPT with keep_attention, what dev.attention draws) by the float64
  rule of tests/helpers/compare.assert_fp32_accurate; rows sum to 1 and the entries above the
  diagonal are exactly 0;
- the CUDA trainer (emulator) refuses --parity-attention with a message naming the CPU trainer;
- `python -m dev.attention` draws a PNG of every layer x head, of one layer, of one head, its
  --out-npy weights equal attention_weights() of the reference model on the encoded prompt
  (word mode over a tokenizer file, GPT-2 BPE for a GPT-2-vocabulary model), and bad input
  (a layer or head out of range, no prompt, an unknown word) is a clear error with exit 1.
Run: python -m pytest -q tests/test_attention.py
"""

import dataclasses

import numpy as np
import pytest

from dev.attention import attention_weights
from dev.configs import NAMED_CONFIGS
from dev.model import GPT
from dev.parity_files import read_parity_attention, write_parity_batch
from dev.tokenizer import write_tokenizer_file
from helpers import assert_fp32_accurate, cuda_trainer, fp32_reference, make_checkpoint, run_trainer

TINY = NAMED_CONFIGS["tiny"]


@pytest.mark.parametrize("T", [9, 40])
def test_trainer_attention_equals_the_reference(tmp_path, T):
    config = dataclasses.replace(TINY, n_head=4)
    model_path = make_checkpoint(tmp_path / "model.bin", config, seed=11, scale=0.3)
    rng = np.random.default_rng(3)
    x = rng.integers(0, config.vocab_size, (2, T)).astype(np.int32)
    write_parity_batch(tmp_path / "batch.bin", x, x, None)
    run_trainer("--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--parity-out", tmp_path / "g.bin",
                "--parity-attention", tmp_path / "att.bin")
    got = read_parity_attention(tmp_path / "att.bin")
    assert got.shape == (config.n_layer, 2, 4, T, T)
    assert np.all(got[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    assert np.allclose(got.sum(-1), 1.0, atol=1e-5)

    def run(model):
        import torch
        model.keep_attention = True
        with torch.no_grad():
            model(torch.from_numpy(x).long())
        return dict(att=np.stack([a.numpy() for a in model.attention]))
    ref64, runs32 = fp32_reference(lambda: GPT.from_checkpoint(model_path), run)
    assert_fp32_accurate(f"attention weights (T={T})", got, ref64, runs32, key="att")
    assert got[..., 1:, 0].std() > 0.01, "the test needs weights that differ between positions"


def test_cuda_trainer_refuses_parity_attention(tmp_path):
    model_path = make_checkpoint(tmp_path / "model.bin", TINY, seed=1)
    x = np.zeros((1, 8), dtype=np.int32)
    write_parity_batch(tmp_path / "batch.bin", x, x, None)
    r = run_trainer("--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--parity-out",
                    tmp_path / "g.bin", "--parity-attention", tmp_path / "att.bin", "--tf32", 0,
                    binary=cuda_trainer("emu"), check=False)
    assert r.returncode == 1 and "--parity-attention" in r.stderr and "./train_gpt2" in r.stderr, r.stderr


@pytest.fixture
def word_model(tmp_path):
    config = dataclasses.replace(TINY, vocab_size=20, max_seq_len=16)
    model_path = make_checkpoint(tmp_path / "model.bin", config, seed=2, scale=0.3)
    words = [f"w{i}".encode() for i in range(19)] + [b"<|eot|>"]
    write_tokenizer_file(tmp_path / "tok.bin", words, eot_id=19)
    return model_path, tmp_path / "tok.bin"


@pytest.mark.parametrize("extra,panels", [((), "2 layer(s) x 2 head(s)"), (("--layer", 1), "1 layer(s) x 2 head(s)"),
                                          (("--layer", 0, "--head", 1), "1 layer(s) x 1 head(s)")])
def test_cli_draws_and_its_weights_are_the_reference(tmp_path, word_model, run_cli, extra, panels):
    model_path, tok = word_model
    r = run_cli("dev.attention", "--model", model_path, "--tokenizer", tok, "--prompt", "w3 w1 w4 w1 w5",
                "--out", tmp_path / "att.png", "--out-npy", tmp_path / "att.npy", *extra)
    assert r.returncode == 0, r.stderr
    assert panels in r.stdout and "5 tokens" in r.stdout
    png = (tmp_path / "att.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    got = np.load(tmp_path / "att.npy")
    want = attention_weights(GPT.from_checkpoint(model_path), [3, 1, 4, 1, 5])
    assert got.shape == (2, 2, 5, 5) and np.allclose(got, want, atol=1e-6)


def test_cli_gpt2_vocabulary_prompt(tmp_path, run_cli):
    config = dataclasses.replace(TINY, vocab_size=50257, n_layer=1, max_seq_len=32)
    model_path = make_checkpoint(tmp_path / "model.bin", config, seed=3, scale=0.05)
    r = run_cli("dev.attention", "--model", model_path, "--prompt", "Once upon a time", "--out", tmp_path / "a.png")
    assert r.returncode == 0, r.stderr
    assert "4 tokens" in r.stdout


@pytest.mark.parametrize("args,want", [
    (("--prompt", "w1 w2", "--layer", 2), "--layer 2 is outside 0..1"),
    (("--prompt", "w1 w2", "--head", -1), "--head -1 is outside 0..1"),
    ((), "--prompt TEXT or --prompt-ids"),
    (("--prompt", "w1 zebra"), "zebra"),
    (("--prompt-ids", "1,99"), "outside [0, 20)"),
])
def test_cli_errors(tmp_path, word_model, run_cli, args, want):
    model_path, tok = word_model
    r = run_cli("dev.attention", "--model", model_path, "--tokenizer", tok, "--out", tmp_path / "a.png", *args)
    assert r.returncode == 1 and want in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "a.png").exists()
