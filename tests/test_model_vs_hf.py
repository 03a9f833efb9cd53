"""Reference model (dev/model.py) against transformers' GPT2LMHeadModel, plus its own contract.

Checks, in fp32 on CPU with dropout off:
  - logits max abs diff <= 1e-5 vs GPT2LMHeadModel (eager attention) loaded via
    to_hf, on the tiny model and a d4-shaped model (L4 NH4 C128, V=50257) with
    EVERY tensor random (LayerNorm weights and biases too). 1e-5 is the issue's
    bar; both sides compute the same fp32 graph with different op orders, and
    the observed difference is ~1e-6 for |logits| ~ 1-5;
  - loss (rel 1e-6) and all 16 gradients (max abs diff <= 1e-5 * max|grad|)
    vs the transformers model's own loss/gradients mapped by name (Conv1D
    weights transposed; wte = wte + lm_head, tied);
  - from_hf(to_hf(m)) returns the same tensors; checkpoint save/load is exact;
  - padded wte rows / logit columns never change the loss; loss_mask averages
    over the selected positions only;
  - QKV bias off: qkvb gets a zero gradient and stays exactly 0 under AdamW;
  - dropout: off by default, the dropout_mask hook is called at the 4 sites.
Run: python -m pytest -q tests/test_model_vs_hf.py
"""

import math

import numpy as np
import pytest
import torch

from dev.checkpoint import PARAM_NAMES, ModelConfig, read_checkpoint
from dev.model import DROPOUT_SITES, GPT, from_hf, to_hf
from helpers import random_params

torch.set_num_threads(2)

D4_LIKE = ModelConfig(max_seq_len=256, vocab_size=50257, n_layer=4, n_head=4, n_embd=128)


def random_model(config, seed=0):
    model = GPT(config, init=False)
    model.load_params(random_params(config, seed))
    return model


def report(name, ours, theirs):
    diff = (ours - theirs).abs()
    i = int(diff.argmax())
    return float(diff.max()), f"{name}: max abs diff {float(diff.max()):.3g} at flat index {i} " \
                              f"(ours {float(ours.reshape(-1)[i]):.6g}, theirs {float(theirs.reshape(-1)[i]):.6g})"


@pytest.mark.parametrize("config,B,T", [(None, 2, 64), (D4_LIKE, 2, 64)], ids=["tiny", "d4-like"])
def test_logits_match_transformers(tiny_config, config, B, T):
    config = config or tiny_config
    model = random_model(config, seed=1)
    hf = to_hf(model)
    idx = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert ours.shape == (B, T, config.padded_vocab_size)
    worst, msg = report("logits", ours[..., :config.vocab_size], theirs)
    print(msg)
    assert worst <= 1e-5, msg
    # padded columns come from the zero padded rows of wte
    assert torch.all(ours[..., config.vocab_size:] == 0)


def test_loss_and_grads_match_transformers(tiny_config):
    config = tiny_config
    model = random_model(config, seed=2)
    hf = to_hf(model)
    idx = torch.randint(0, config.vocab_size, (3, 33), generator=torch.Generator().manual_seed(1))
    inputs, targets = idx[:, :-1], idx[:, 1:]
    _, loss = model(inputs, targets)
    loss.backward()
    # transformers shifts the labels itself: logits at t are scored against labels[t+1].
    # Feeding the full idx gives the same first 32 positions (causal) and the same loss.
    hf_loss = hf(input_ids=idx, labels=idx).loss
    hf_loss.backward()
    assert math.isclose(loss.item(), hf_loss.item(), rel_tol=1e-6), (loss.item(), hf_loss.item())
    sd = {n: p.grad for n, p in hf.named_parameters()}
    L = config.n_layer
    hf_grads = {
        "wte": torch.cat([sd["transformer.wte.weight"], torch.zeros(config.padded_vocab_size - config.vocab_size, config.n_embd)]),
        "wpe": sd["transformer.wpe.weight"],
        "lnfw": sd["transformer.ln_f.weight"], "lnfb": sd["transformer.ln_f.bias"],
    }
    per_layer = {"ln1w": ("ln_1.weight", False), "ln1b": ("ln_1.bias", False),
                 "qkvw": ("attn.c_attn.weight", True), "qkvb": ("attn.c_attn.bias", False),
                 "attprojw": ("attn.c_proj.weight", True), "attprojb": ("attn.c_proj.bias", False),
                 "ln2w": ("ln_2.weight", False), "ln2b": ("ln_2.bias", False),
                 "fcw": ("mlp.c_fc.weight", True), "fcb": ("mlp.c_fc.bias", False),
                 "fcprojw": ("mlp.c_proj.weight", True), "fcprojb": ("mlp.c_proj.bias", False)}
    for ours_name, (suffix, transpose) in per_layer.items():
        g = [sd[f"transformer.h.{l}.{suffix}"] for l in range(L)]
        hf_grads[ours_name] = torch.stack([x.t() if transpose else x for x in g])
    for name in PARAM_NAMES:
        ours_g = getattr(model, name).grad
        scale = float(hf_grads[name].abs().max())
        worst, msg = report(f"d{name}", ours_g, hf_grads[name])
        assert scale > 0, f"d{name} is all zero: the test would not see a mismatch"
        assert worst <= 1e-5 * scale, msg + f" > 1e-5 * max|grad| = {1e-5 * scale:.3g}"


def test_hf_round_trip_and_checkpoint(tmp_path, tiny_config):
    model = random_model(tiny_config, seed=3)
    back = from_hf(to_hf(model))
    for name in PARAM_NAMES:
        assert torch.equal(getattr(back, name), getattr(model, name)), name
    path = tmp_path / "m.bin"
    model.save_checkpoint(path)
    loaded = GPT.from_checkpoint(path)
    assert loaded.config == tiny_config
    for name in PARAM_NAMES:
        assert torch.equal(getattr(loaded, name), getattr(model, name)), name


def test_padded_columns_ignored_by_loss(tiny_config):
    model = random_model(tiny_config, seed=4)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, loss = model(idx, idx)
        model.wte[tiny_config.vocab_size:] = 50.0  # huge padded logits
        logits2, loss2 = model(idx, idx)
    V = tiny_config.vocab_size
    assert torch.equal(logits[..., :V], logits2[..., :V])
    assert torch.all(logits2[..., V:] != 0)
    assert loss.item() == loss2.item()


def test_loss_mask(tiny_config):
    model = random_model(tiny_config, seed=5)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8), generator=g)
    targets = torch.randint(0, tiny_config.vocab_size, (2, 8), generator=g)
    mask = torch.zeros(2, 8, dtype=torch.int32)
    mask[0, 7] = mask[1, 3] = mask[1, 7] = 1
    with torch.no_grad():
        logits, loss = model(idx, targets, loss_mask=mask)
    logp = torch.log_softmax(logits[..., :tiny_config.vocab_size].double(), dim=-1)
    expected = -(logp[0, 7, targets[0, 7]] + logp[1, 3, targets[1, 3]] + logp[1, 7, targets[1, 7]]) / 3
    assert abs(loss.item() - expected.item()) <= 1e-6 * abs(expected.item())
    with pytest.raises(ValueError, match="no positions"):
        model(idx, targets, loss_mask=torch.zeros(2, 8))


def test_no_qkv_bias_stays_zero(tmp_path, tiny_config):
    config = ModelConfig(**{**tiny_config.__dict__, "qkv_bias": False})
    model = GPT(config, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    idx = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        opt.zero_grad()
        _, loss = model(idx, idx)
        loss.backward()
        assert model.qkvb.grad is not None and torch.all(model.qkvb.grad == 0)
        assert model.qkvw.grad.abs().max() > 0
        opt.step()
    assert torch.all(model.qkvb == 0)
    model.save_checkpoint(tmp_path / "m.bin")
    assert np.fromfile(tmp_path / "m.bin", dtype="<i4", count=9)[8] == 1
    assert read_checkpoint(tmp_path / "m.bin")[0].qkv_bias is False


def test_dropout_off_by_default_and_hook(tiny_config):
    model = random_model(tiny_config, seed=6)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model.eval()
        ref, _ = model(idx)
        model.train()
        assert torch.equal(model(idx)[0], ref), "dropout must be off by default"
        calls = []

        def keep_all(site, layer, shape):
            calls.append((site, layer, shape))
            return torch.ones(shape)

        model.dropout, model.dropout_mask = 0.5, keep_all
        model(idx)
        C, NH = tiny_config.n_embd, tiny_config.n_head
        expected = [("embed", -1, (2, 10, C))]
        for l in range(tiny_config.n_layer):
            expected += [("attn", l, (2, NH, 10, 10)), ("attn_proj", l, (2, 10, C)), ("mlp", l, (2, 10, C))]
        assert calls == expected
        assert {c[0] for c in calls} == set(DROPOUT_SITES)

        # a mask that drops everything at the MLP output removes the MLP branch entirely
        def drop_mlp(site, layer, shape):
            return torch.zeros(shape) if site == "mlp" else torch.ones(shape)
        model.dropout, model.dropout_mask = 1e-12, drop_mlp
        no_mlp, _ = model(idx)
        model.fcprojw.zero_()
        model.fcprojb.zero_()
        model.dropout = 0.0
        assert torch.allclose(no_mlp, model(idx)[0], atol=1e-6)
