"""LoRA in both trainers against Hugging Face PEFT, adapter files, resume, merge and PEFT export.

What it checks, on a tiny model whose tensors are all random and adapters whose A and B are both
random (so every adapter gradient is non-trivial):
- one forward and backward (`--lora-adapter A --parity-batch --parity-out`): logits, loss and the
  gradients of every adapter tensor against PEFT's LoraConfig on transformers' GPT2LMHeadModel
  with the same weights (target modules attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), by the
  float64 rule of tests/helpers/compare.assert_fp32_accurate (PEFT in float64 is the reference,
  PEFT in fp32 from starts one ulp away the spread), for three target sets and a masked batch, and
  on a model with an untied head and no QKV bias;
- new adapters (--lora-rank) start with B = 0: the logits equal the base model's bit for bit and
  A's gradient is exactly zero, and A is within PEFT's Kaiming-uniform bound 1/sqrt(in);
- 10 AdamW steps (weight decay, clipping, warmup + cosine) against torch.optim.AdamW on the PEFT
  model's adapters in float64, same rule; the base model file is untouched by training;
- resume: 5 steps, then a resume to 10, gives the straight run's adapter, model and state bytes;
- `python -m dev.lora merge`: the merged checkpoint's logits (computed by the trainer) against
  PEFT's merge_and_unload() (float64 rule); `export-peft` writes a folder that
  PeftModel.from_pretrained loads onto the exported base model with the same logits;
The parity, step, init and resume tests run on the CPU trainer and on the CUDA trainer (--tf32 0;
emu: the CPU emulator, always; gpu: skipped without a GPU; tests/helpers/trainers.py), where
cuBLAS sums in another order and folds the scale into its alpha: the same rule holds.
- bad input gets a clear error and exit 1: an adapter of another base model, of other
  dimensions, truncated, with a NaN, with a bad header; unknown targets; rank > C; LoRA with
  --weight-noise or --decay-toward-init; a resumed LoRA run whose adapter file is missing.
Run: python -m pytest -q tests/test_lora.py
"""

import dataclasses

import numpy as np
import pytest
import torch

from dev.checkpoint import read_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.lora import (Adapter, adapter_shapes, model_checksum, peft_adapter_grads, peft_model,
                      read_adapter, target_dims, write_adapter)
from dev.model import GPT, cross_entropy_loss, to_hf
from dev.parity_files import read_parity_grads, read_parity_losses, write_parity_batch
from dev.train_state import read_train_state
from helpers import (ADAMW_OPT, assert_fp32_accurate, cuda_trainer, fp32_reference, lr_at, make_checkpoint,
                     optimizer_flags, read_log, run_trainer, same_files)

CONFIG = NAMED_CONFIGS["tiny"]
V = CONFIG.vocab_size
ALL = ("qkvw", "attprojw", "fcw", "fcprojw")
TRAINERS = ["cpu", "emu", "gpu"]


def trainer_run(trainer):
    """run_trainer for the CPU trainer or the CUDA one of a backend (exact fp32: --tf32 0)."""
    if trainer == "cpu":
        return run_trainer
    binary = cuda_trainer(trainer)
    return lambda *args, **kw: run_trainer(*args, "--tf32", 0, binary=binary, **kw)


def random_adapter(model_path, targets, rank=3, alpha=6.0, seed=0, scale=0.1):
    config, params = read_checkpoint(model_path)
    rng = np.random.default_rng(seed)
    shapes = adapter_shapes(rank, targets, config.n_layer, config.n_embd)
    tensors = {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in shapes.items()}
    return Adapter(rank, alpha, tuple(t for t in ALL if t in targets), config.n_layer, config.n_embd,
                   model_checksum(config, params), tensors)


def batch(tmp_path, B=3, T=29, mask_frac=None, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = None
    if mask_frac is not None:
        mask = (rng.random((B, T)) < mask_frac).astype(np.int32)
        mask[0, -1] = 1
    write_parity_batch(tmp_path / "batch.bin", x, y, mask)
    return x, y, mask


def peft_pass(x, y, mask, adapter):
    """run() for fp32_reference: one forward and backward of a PEFT model; adapter gradients."""
    def run(model):
        model.zero_grad()
        logits = model(input_ids=torch.from_numpy(x).long()).logits
        loss = cross_entropy_loss(logits, torch.from_numpy(y).long(), V, None if mask is None else torch.from_numpy(mask))
        loss.backward()
        return dict(peft_adapter_grads(model, adapter), logits=logits.detach().numpy(), loss=loss.item())
    return run


def load_peft(model_path, adapter):
    return lambda: peft_model(to_hf(GPT.from_checkpoint(model_path)), adapter)


@pytest.fixture
def model_path(tmp_path):
    return make_checkpoint(tmp_path / "model.bin", CONFIG, seed=7)


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("targets,mask_frac", [(("qkvw",), None), (ALL, 0.4), (("attprojw", "fcw"), None)])
def test_one_pass_matches_peft(tmp_path, model_path, targets, mask_frac, trainer):
    run = trainer_run(trainer)
    adapter = random_adapter(model_path, targets)
    write_adapter(tmp_path / "adapter.bin", adapter)
    x, y, mask = batch(tmp_path, mask_frac=mask_frac)
    run("--model", model_path, "--lora-adapter", tmp_path / "adapter.bin", "--parity-batch",
                tmp_path / "batch.bin", "--parity-out", tmp_path / "grads.bin")
    got = read_parity_grads(tmp_path / "grads.bin")
    assert list(got["grads"]) == list(adapter_shapes(3, targets, CONFIG.n_layer, CONFIG.n_embd))
    ref64, runs32 = fp32_reference(load_peft(model_path, adapter), peft_pass(x, y, mask, adapter))
    what = f"{trainer} vs PEFT, {','.join(targets)}"
    assert_fp32_accurate(f"logits ({what})", got["logits"][..., :V], ref64, runs32, key="logits")
    assert_fp32_accurate(f"loss ({what})", got["loss"], ref64, runs32, key="loss")
    for name, g in got["grads"].items():
        assert np.abs(ref64[name]).max() > 0, f"{name}: the test needs a non-zero gradient"
        assert_fp32_accurate(f"d{name} ({what})", g, ref64, runs32, key=name)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_one_pass_matches_peft_untied_head_no_qkv_bias(tmp_path, trainer):
    """The frozen parameters include an untied lm_head and a zero QKV bias: neither gets touched."""
    config = dataclasses.replace(CONFIG, untied_head=True, qkv_bias=False)
    model_path = make_checkpoint(tmp_path / "model.bin", config, seed=9)
    adapter = random_adapter(model_path, ("qkvw", "fcw"), rank=2, alpha=3.0, seed=4)
    write_adapter(tmp_path / "adapter.bin", adapter)
    x, y, mask = batch(tmp_path, B=2, T=33, mask_frac=0.5, seed=3)
    trainer_run(trainer)("--model", model_path, "--lora-adapter", tmp_path / "adapter.bin", "--parity-batch",
                         tmp_path / "batch.bin", "--parity-out", tmp_path / "grads.bin")
    got = read_parity_grads(tmp_path / "grads.bin")
    ref64, runs32 = fp32_reference(load_peft(model_path, adapter), peft_pass(x, y, mask, adapter))
    what = f"{trainer} vs PEFT, untied head, no QKV bias"
    assert_fp32_accurate(f"logits ({what})", got["logits"][..., :V], ref64, runs32, key="logits")
    for name, g in got["grads"].items():
        assert_fp32_accurate(f"d{name} ({what})", g, ref64, runs32, key=name)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_new_adapters_start_as_the_base_model(tmp_path, model_path, trainer):
    run = trainer_run(trainer)
    batch(tmp_path)
    run("--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--parity-out", tmp_path / "base.bin")
    run("--model", model_path, "--lora-rank", 4, "--lora-targets", "qkvw,fcprojw", "--parity-batch",
                tmp_path / "batch.bin", "--parity-out", tmp_path / "lora.bin")
    base, lora = read_parity_grads(tmp_path / "base.bin"), read_parity_grads(tmp_path / "lora.bin")
    assert np.array_equal(base["logits"], lora["logits"]) and base["loss"] == lora["loss"]
    for t in ("qkvw", "fcprojw"):
        assert not lora["grads"][f"{t}.A"].any(), "with B = 0, A gets no gradient"
        assert np.abs(lora["grads"][f"{t}.B"]).max() > 0


def peft_train_steps(model, adapter, x, y, mask, steps, lr, warmup, schedule, min_lr_frac, beta1, beta2, eps,
                     weight_decay, grad_clip):
    """torch.optim.AdamW on the PEFT model's adapters with the trainer's clipping rule."""
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    assert all(p.requires_grad for p in params)
    opt = torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    losses, norms = [], []
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, warmup, steps, schedule, min_lr_frac)
        opt.zero_grad()
        logits = model(input_ids=torch.from_numpy(x).long()).logits
        loss = cross_entropy_loss(logits, torch.from_numpy(y).long(), V, None if mask is None else torch.from_numpy(mask))
        loss.backward()
        norm = float(np.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params)))
        if grad_clip > 0 and norm > grad_clip:
            for p in params:
                p.grad.mul_(grad_clip / norm)
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
    out = {}
    for t in adapter.targets:
        for part in ("A", "B"):
            out[f"{t}.{part}"] = np.stack([getattr(model.base_model.model.transformer.h[l].get_submodule(
                {"qkvw": "attn.c_attn", "attprojw": "attn.c_proj", "fcw": "mlp.c_fc", "fcprojw": "mlp.c_proj"}[t]),
                f"lora_{part}")["default"].weight.detach().double().numpy() for l in range(adapter.L)])
    return dict(out, losses=np.array(losses), norms=np.array(norms))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_adamw_steps_match_peft(tmp_path, model_path, trainer):
    run = trainer_run(trainer)
    adapter = random_adapter(model_path, ("qkvw", "fcw"), rank=2, alpha=4.0, seed=3)
    write_adapter(tmp_path / "adapter.bin", adapter)
    x, y, mask = batch(tmp_path, B=4, T=32, mask_frac=0.6, seed=2)
    steps, clip = 10, 0.59  # the norms run from ~0.577 to ~0.602: some steps clip, some do not
    out = tmp_path / "run"
    run("--model", model_path, "--lora-adapter", tmp_path / "adapter.bin", "--parity-batch",
                tmp_path / "batch.bin", "--steps", steps, "--parity-losses", tmp_path / "losses.bin", "-o", out,
                *optimizer_flags(**ADAMW_OPT, grad_clip=clip))
    losses = read_parity_losses(tmp_path / "losses.bin")
    ref64, runs32 = fp32_reference(load_peft(model_path, adapter),
                                   lambda m: peft_train_steps(m, adapter, x, y, mask, steps, grad_clip=clip, **ADAMW_OPT))
    assert (ref64["norms"] > clip).any() and (ref64["norms"] < clip).any(), ref64["norms"]
    assert_fp32_accurate("losses (PEFT, 10 steps)", losses, ref64, runs32, key="losses")
    log = [r for r in read_log(out / "log.jsonl") if "train_loss" in r]
    assert_fp32_accurate("grad norms (PEFT, 10 steps)", [r["grad_norm"] for r in log], ref64, runs32, key="norms")
    trained = read_adapter(out / f"adapter_{steps:06d}.bin")
    for name, arr in trained.tensors.items():
        assert_fp32_accurate(f"{name} after {steps} steps (PEFT)", arr, ref64, runs32, key=name)
    assert same_files(out / f"model_{steps:06d}.bin", model_path), "the base model stays as it was"
    header = read_log(out / "log.jsonl")[0]["config"]
    assert header["lora"]["rank"] == 2 and header["num_trained"] == sum(a.size for a in adapter.tensors.values())


@pytest.mark.parametrize("trainer", TRAINERS)
def test_resume_is_bit_identical(tmp_path, model_path, trainer):
    run = trainer_run(trainer)
    rng = np.random.default_rng(0)
    from dev.shards import write_token_shard
    write_token_shard(tmp_path / "train.bin", rng.integers(0, V, 4000))
    write_token_shard(tmp_path / "val.bin", rng.integers(0, V, 600))
    common = ["-i", tmp_path / "train.bin", "-j", tmp_path / "val.bin", "-b", 4, "-t", 32, "-v", 5, "-s", 0,
              "-l", 1e-3, "-c", 0.1, "--dropout", 0.1]
    lora = ["--model", model_path, "--lora-rank", 4, "--lora-alpha", 16, "--lora-targets", ",".join(ALL)]
    run(*lora, *common, "--steps", 10, "-o", tmp_path / "straight")
    run(*lora, *common, "--steps", 10, "-n", 5, "-o", tmp_path / "split")
    for f in ("model", "adapter", "state"):
        (tmp_path / "split" / f"{f}_000010.bin").unlink()
    run("--resume", tmp_path / "split" / "state_000005.bin", *common)
    for f in ("model", "adapter", "state"):
        assert same_files(tmp_path / "straight" / f"{f}_000010.bin", tmp_path / "split" / f"{f}_000010.bin"), f
    st = read_train_state(tmp_path / "straight" / "state_000010.bin")
    q = sum(a.size for a in read_adapter(tmp_path / "straight" / "adapter_000010.bin").tensors.values())
    assert st["lora"] == 1 and st["num_trained"] == q == len(st["m"]) == len(st["v"])
    a0 = read_adapter(tmp_path / "split" / "adapter_000005.bin")
    assert a0.rank == 4 and a0.alpha == 16 and a0.targets == ALL


@pytest.mark.parametrize("trainer", ["cpu", "emu"])
def test_new_adapter_init_is_peft_default(tmp_path, model_path, trainer):
    out = tmp_path / "run"
    batch(tmp_path)
    trainer_run(trainer)("--model", model_path, "--lora-rank", 8, "--lora-targets", "fcprojw,qkvw", "--parity-batch",
                tmp_path / "batch.bin", "--steps", 1, "--parity-losses", tmp_path / "l.bin", "-o", out, "-l", 0)
    a = read_adapter(out / "adapter_000001.bin")
    for t in a.targets:
        bound = 1 / np.sqrt(target_dims(t, CONFIG.n_embd)[0])
        A = a.tensors[f"{t}.A"]
        assert np.abs(A).max() <= bound and np.abs(A).max() > 0.9 * bound and abs(A.mean()) < 0.1 * bound
        assert not a.tensors[f"{t}.B"].any()


def test_merge_matches_peft_merge_and_unload(tmp_path, model_path, run_cli):
    adapter = random_adapter(model_path, ("qkvw", "attprojw", "fcprojw"), seed=5)
    write_adapter(tmp_path / "adapter.bin", adapter)
    r = run_cli("dev.lora", "merge", "--model", model_path, "--adapter", tmp_path / "adapter.bin",
                "--out", tmp_path / "merged.bin")
    assert r.returncode == 0, r.stderr
    x, y, _ = batch(tmp_path)
    run_trainer("--model", tmp_path / "merged.bin", "--parity-batch", tmp_path / "batch.bin", "--parity-out",
                tmp_path / "grads.bin")
    got = read_parity_grads(tmp_path / "grads.bin")

    def merged_logits(model):
        with torch.no_grad():
            plain = model.merge_and_unload()
            return dict(logits=plain(input_ids=torch.from_numpy(x).long()).logits.numpy())
    ref64, runs32 = fp32_reference(load_peft(model_path, adapter), merged_logits)
    assert_fp32_accurate("logits of the merged checkpoint (PEFT merge_and_unload)", got["logits"][..., :V], ref64,
                         runs32, key="logits")


def test_export_peft_loads_in_peft(tmp_path, model_path, run_cli):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    adapter = random_adapter(model_path, ALL, rank=2, seed=6)
    write_adapter(tmp_path / "adapter.bin", adapter)
    out = tmp_path / "peft"
    r = run_cli("dev.lora", "export-peft", "--model", model_path, "--adapter", tmp_path / "adapter.bin",
                "--out-dir", out)
    assert r.returncode == 0, r.stderr
    loaded = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(out / "base"), out)
    direct = load_peft(model_path, adapter)()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, V, (2, 20)))
    with torch.no_grad():
        diff = (loaded(input_ids=x).logits - direct(input_ids=x).logits).abs().max().item()
    assert diff <= 1e-5, diff
    assert run_cli("dev.lora", "export-peft", "--model", model_path, "--adapter", tmp_path / "adapter.bin",
                   "--out-dir", out).returncode == 1  # exists, no --force


def _error(r, *want):
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stderr}"
    assert "error: " in r.stderr and "Traceback" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    for w in want:
        assert str(w) in r.stderr, f"{w!r} not in {r.stderr}"


def test_bad_adapters_and_flags_are_clear_errors(tmp_path, model_path, run_cli):
    batch(tmp_path)
    base = ["--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--parity-out", tmp_path / "g.bin"]
    adapter = random_adapter(model_path, ("qkvw",))
    good = tmp_path / "adapter.bin"
    write_adapter(good, adapter)
    other = make_checkpoint(tmp_path / "other.bin", CONFIG, seed=8)
    _error(run_trainer("--model", other, "--lora-adapter", good, "--parity-batch", tmp_path / "batch.bin",
                       "--parity-out", tmp_path / "g.bin", check=False), good, "another base model", other)
    _error(run_cli("dev.lora", "merge", "--model", other, "--adapter", good, "--out", tmp_path / "m.bin"),
           "another base model")
    wide = make_checkpoint(tmp_path / "wide.bin", dataclasses.replace(CONFIG, n_layer=3), seed=1)
    _error(run_trainer("--model", wide, "--lora-adapter", good, "--parity-batch", tmp_path / "batch.bin",
                       "--parity-out", tmp_path / "g.bin", check=False), "L=2", "L=3")
    raw = good.read_bytes()
    cases = {
        "truncated": (raw[:-8], ["truncated"]),
        "nan": (raw[:1024] + np.float32(np.nan).tobytes() + raw[1028:], ["non-finite"]),
        "rank 0": (raw[:8] + np.int32(0).tobytes() + raw[12:], ["rank 0"]),
        "mask 16": (raw[:16] + np.int32(16).tobytes() + raw[20:], ["target mask 16"]),
        "magic": (np.int32(5).tobytes() + raw[4:], ["magic number 5"]),
    }
    for name, (data, want) in cases.items():
        bad = tmp_path / f"bad_{name.replace(' ', '_')}.bin"
        bad.write_bytes(data)
        _error(run_trainer(*base, "--lora-adapter", bad, check=False), bad, *want)
        _error(run_cli("dev.lora", "merge", "--model", model_path, "--adapter", bad, "--out", tmp_path / "m.bin"), bad)
    _error(run_trainer(*base, "--lora-rank", 2, "--lora-targets", "qkvw,c_attn", check=False), "c_attn", "qkvw, attprojw")
    _error(run_trainer(*base, "--lora-rank", 2, "--lora-targets", "fcw,fcw", check=False), "twice")
    _error(run_trainer(*base, "--lora-rank", CONFIG.n_embd + 1, check=False), "rank 65", "C=64")
    _error(run_trainer(*base, "--lora-rank", 2, "--weight-noise", 0.01, check=False), "--weight-noise")
    _error(run_trainer(*base, "--lora-rank", 2, "--decay-toward-init", 1, check=False), "--decay-toward-init")
    _error(run_trainer(*base, "--lora-rank", 2, "--lora-adapter", good, check=False), "drop --lora-rank")
    _error(run_trainer(*base, "--lora-rank", 2, "--lora-alpha", 0, check=False), "--lora-alpha")
    # a resumed LoRA run needs its adapter file
    out = tmp_path / "run"
    run_trainer("--model", model_path, "--lora-rank", 2, "--parity-batch", tmp_path / "batch.bin", "--steps", 2,
                "--parity-losses", tmp_path / "l.bin", "-o", out, "-n", 1)
    (out / "adapter_000001.bin").unlink()
    _error(run_trainer("--resume", out / "state_000001.bin", "-i", tmp_path / "batch.bin", check=False),
           "adapter_000001.bin", "missing")
