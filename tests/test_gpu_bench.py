"""dev/bench_gpu.py's PyTorch model is the same function as the reference dev.model.GPT.

What it checks (on the CPU, so in CI): the nanoGPT-style module the GPU benchmark times for
"PyTorch eager" and "torch.compile" (per-layer nn.Linear, scaled_dot_product_attention, the LM
head over the V real rows of wte), built from a checkpoint's 16 tensors, gives the reference
model's loss within 1e-5 relative and the same gradients (1e-4 * max|g|, mapped back to the 16
stacked tensors), with and without the QKV bias; so the benchmark compares the same model. Also
the FLOP formula against a hand count, and that --configs rejects a malformed item.
Run: python -m pytest -q tests/test_gpu_bench.py
"""

import dataclasses

import numpy as np
import pytest
import torch

from dev.bench_gpu import build_torch_model, flops_per_step, parse_configs
from dev.configs import NAMED_CONFIGS
from dev.errors import UserError
from dev.model import GPT
from helpers import assert_close, grad_tolerance, random_params


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_bench_model_equals_reference(qkv_bias):
    config = dataclasses.replace(NAMED_CONFIGS["tiny"], qkv_bias=qkv_bias)
    params = random_params(config, seed=3)
    ref = GPT(config, init=False)
    with torch.no_grad():
        for name, value in params.items():
            getattr(ref, name).copy_(torch.from_numpy(value))
    bench = build_torch_model(config, params)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, config.vocab_size, (2, 40)))
    y = torch.from_numpy(rng.integers(0, config.vocab_size, (2, 40)))
    _, ref_loss = ref(x, y)
    ref_loss.backward()
    loss = bench(x, y)
    loss.backward()
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item()), (loss.item(), ref_loss.item())
    g = ref.grads_numpy()
    L = config.n_layer
    stack = lambda f: np.stack([f(b).grad.numpy() for b in bench.blocks])  # noqa: E731
    got = {
        "wte": bench.wte.grad.numpy(), "wpe": bench.wpe.grad.numpy(),
        "ln1w": stack(lambda b: b.ln1.weight), "ln1b": stack(lambda b: b.ln1.bias),
        "qkvw": stack(lambda b: b.qkv.weight), "attprojw": stack(lambda b: b.proj.weight),
        "attprojb": stack(lambda b: b.proj.bias), "ln2w": stack(lambda b: b.ln2.weight),
        "ln2b": stack(lambda b: b.ln2.bias), "fcw": stack(lambda b: b.fc.weight), "fcb": stack(lambda b: b.fc.bias),
        "fcprojw": stack(lambda b: b.fcproj.weight), "fcprojb": stack(lambda b: b.fcproj.bias),
        "lnfw": bench.lnf.weight.grad.numpy(), "lnfb": bench.lnf.bias.grad.numpy(),
    }
    if qkv_bias:
        got["qkvb"] = stack(lambda b: b.qkv.bias)
    assert len(got) == 15 + qkv_bias and all(v.shape[0] == L for k, v in got.items() if k not in ("wte", "wpe", "lnfw", "lnfb"))
    for name, value in got.items():
        assert_close(f"d{name} (bench model vs reference)", value, g[name], grad_tolerance(g[name]))


def test_flops_formula_by_hand():
    cfg = NAMED_CONFIGS["d12"]
    # N_mm = 12 * 12 * 768^2 + 50304 * 768 = 84,934,656 + 38,633,472
    n_mm = 84_934_656 + 38_633_472
    assert flops_per_step(cfg, 16, 1024) == 16 * 1024 * (6 * n_mm + 12 * 12 * 1024 * 768)


def test_configs_parse_and_reject():
    assert [(n, b, t) for n, _, b, t in parse_configs("d12:4:1024, d4:16:256")] == [("d12", 4, 1024), ("d4", 16, 256)]
    with pytest.raises(UserError, match="NAME:B:T"):
        parse_configs("d12:4")
