"""The research regularizers' parity procedures, shared by the CPU and the CUDA trainer's tests
(tests/test_regularizers.py, tests/test_gpu_regularizers.py).

  parity_case(tmp_path, config, seed, B, T, extra, binary=None)
                            a random model and batch, one --parity-out pass of the trainer
  reference_with_dropout(model_path, x, y, p, seed, step=1)
                            (ref64, runs32) of dev.model.GPT with the trainer's dropout masks
  check_parity(got, ref, what)
                            the one-pass float64 rule (check_one_pass)
  REG_OPT, REG_STEPS, REG_SEED, REG_CASES
                            the settings of the 10-step runs with each regularizer
  train_parity_steps(tmp_path, config, reg, binary=None, extra=())
                            REG_STEPS steps on one batch with the regularizers `reg`
  near_zero_gradients(model_path, x, y, dropout=0.0, rel=1e-6)
                            the elements whose step-1 gradient is at the rounding level
  compare_params(got, ref64, runs32, config, what, tiny_grad)
                            parameters after the steps against float64, the near-zero-gradient
                            elements within lr * steps
  reference_steps(model_path, xy, reg)
                            (ref64, runs32) of torch_train_steps with `reg`
"""

import numpy as np
import torch

from dev.checkpoint import PARAM_NAMES, param_shapes, read_checkpoint
from dev.model import GPT
from dev.parity_files import read_parity_grads, read_parity_losses, write_parity_batch
from dev.regularizers import CounterDropout

from .compare import assert_close, assert_fp32_accurate, check_one_pass, fp32_reference, reference_pass
from .files import make_checkpoint
from .reference import optimizer_flags, torch_train_steps
from .trainers import run_trainer


# ---- dropout parity: one forward and backward ---------------------------------------------------

def parity_case(tmp_path, config, seed, B, T, extra, binary=None):
    """A random model (seed) and batch (seed + 100), one `--parity-out` pass of the trainer with the
    flags `extra`; returns (model path, x, y, the parity result)."""
    model_path = tmp_path / "model.bin"
    make_checkpoint(model_path, config, seed)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    y = rng.integers(0, config.vocab_size, (B, T)).astype(np.int32)
    write_parity_batch(tmp_path / "batch.bin", x, y)
    run_trainer("--model", model_path, "--parity-batch", tmp_path / "batch.bin",
                "--parity-out", tmp_path / "grads.bin", *extra, binary=binary)
    return model_path, x, y, read_parity_grads(tmp_path / "grads.bin")


def reference_with_dropout(model_path, x, y, p, seed, step=1):
    """(ref64, runs32) of dev.model.GPT with the trainer's dropout masks of `step`
    (fp32_reference)."""
    def load():
        model = GPT.from_checkpoint(model_path, dropout=p, dropout_mask=CounterDropout(seed, p, step))
        model.train()
        return model
    return fp32_reference(load, reference_pass(x, y, None))


def check_parity(got, ref, what):
    """The one-pass rule of tests/test_cpu_parity.py (check_one_pass): logits, loss and gradients
    against float64."""
    check_one_pass(got, *ref, what)


# ---- 10 AdamW steps with each regularizer ------------------------------------------------------

REG_OPT = dict(lr=1e-3, warmup=3, schedule="cosine", min_lr_frac=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
               weight_decay=0.5, grad_clip=0.0)
REG_STEPS = 10
REG_SEED = 77
REG_CASES = {
    "dropout": dict(dropout=0.1),
    "decay-toward-init": dict(decay_toward_init=True),
    "weight-noise": dict(weight_noise=0.01),
    "all-three": dict(dropout=0.1, decay_toward_init=True, weight_noise=0.01),
    "no-qkv-bias": dict(),
}


def train_parity_steps(tmp_path, config, reg, binary=None, extra=()):
    """Run REG_STEPS steps on one batch with the regularizers `reg`; (model path, batch, losses, params)."""
    model_path = tmp_path / "model.bin"
    # random weights (scale 0.05, LayerNorm around 1) that the decay visibly pulls on
    make_checkpoint(model_path, config, seed=5, scale=0.05)
    rng = np.random.default_rng(9)
    B, T = 4, 32
    x = rng.integers(0, config.vocab_size, (B, T))
    y = rng.integers(0, config.vocab_size, (B, T))
    write_parity_batch(tmp_path / "batch.bin", x, y)
    out = tmp_path / "run"
    run_trainer("--model", model_path, "--parity-batch", tmp_path / "batch.bin", "--steps", REG_STEPS,
                "--parity-losses", tmp_path / "losses.bin", "-o", out,
                *optimizer_flags(**REG_OPT, **reg, seed=REG_SEED), *extra, binary=binary)
    _, params = read_checkpoint(out / f"model_{REG_STEPS:06d}.bin")
    return model_path, (x, y), read_parity_losses(tmp_path / "losses.bin"), params


def near_zero_gradients(model_path, x, y, dropout=0.0, rel=1e-6, **_):
    """name -> bool mask of the elements whose step-1 gradient is not exactly zero but below
    rel * max|g| of its tensor (an exact zero is exact in both implementations)."""
    model = GPT.from_checkpoint(model_path, dropout=dropout, dropout_mask=CounterDropout(REG_SEED, dropout, 1))
    _, loss = model(torch.from_numpy(x).long(), torch.from_numpy(y).long())
    loss.backward()
    return {n: (g != 0) & (np.abs(g) <= rel * np.abs(g).max()) for n, g in model.grads_numpy().items()}


def compare_params(got, ref64, runs32, config, what, tiny_grad, noise_atol=REG_OPT["lr"] * REG_STEPS):
    """Parameters after REG_STEPS steps against float64 (assert_fp32_accurate),
    except where the true gradient is ~0.

    Where the gradient is at the rounding level of its own sum (below 1e-6 * max|g| of its
    tensor: the key bias, whose true gradient is zero (see tests/test_cpu_train.py), and the odd
    weight of a unit that is almost never active), its sign is noise, AdamW turns that noise into
    steps of up to lr either way, and two correct implementations drift apart by up to lr * steps.
    Those elements get noise_atol, and there must be few of them (<= 0.1% of a tensor besides
    the key bias), so the float64 comparison covers the rest."""
    C = config.n_embd
    for name in param_shapes(config):
        loose = tiny_grad[name].copy()
        if name == "qkvb":
            loose[:, C:2 * C] = True
            others = np.concatenate([loose[:, :C], loose[:, 2 * C:]], axis=1)
            assert others.mean() <= 1e-3, f"qkvb: {others.mean():.2%} of q/v bias gradients are ~0"
        else:
            assert loose.mean() <= 1e-3, f"{name}: {loose.mean():.2%} of the gradients are ~0"
        assert_fp32_accurate(f"{name} after {REG_STEPS} steps ({what})", got[name], ref64, runs32, ~loose,
                             key=name)
        assert_close(f"{name} after {REG_STEPS} steps, near-zero-gradient elements ({what})",
                     got[name][loose], ref64[name][loose], noise_atol)


def reference_steps(model_path, xy, reg):
    """(ref64, runs32) of fp32_reference for REG_STEPS AdamW steps with `reg`:
    dicts of the 16 parameters after the steps and "losses"."""
    def run(model):
        losses, _ = torch_train_steps(model, xy[0], xy[1], REG_STEPS, seed=REG_SEED, **REG_OPT, **reg)
        return dict(model.params_numpy(), losses=losses)
    return fp32_reference(lambda: GPT.from_checkpoint(model_path), run)
