"""The random numbers of the research regularizers, bit for bit as llmc/regularizers.h.

Contract (see llmc/regularizers.h for the full rules, which this file mirrors):
  counter_u64(key, i)             the i-th splitmix64 output from `key` (numpy uint64, vectorized)
  dropout_key(seed, step, layer, site), noise_key(seed, step)
  dropout_factor(key, n, p)       float32 (n,) array: 0 where dropped, float32(1/(1-p)) where kept
  CounterDropout(seed, p)         a dev.model.GPT dropout_mask: model.dropout_mask = CounterDropout(...);
                                  set .step before each training step's forward pass
  weight_noise(config, seed, step, sigma)
                                  dict name -> float32 noise array (checkpoint shapes), zero on
                                  wte's padded rows and on qkvb without a QKV bias
With these the PyTorch reference draws exactly the masks and noise of train_gpt2 and
train_gpt2fp32cu for the same --seed and step, so the parity tests run with the regularizers on.
"""

import numpy as np
import torch

from dev.checkpoint import PARAM_NAMES, param_shapes

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
DROPOUT_TAG = 0x64726F706F7574   # "dropout"
NOISE_TAG = 0x6E6F697365         # "noise"
SITES = {"embed": 0, "attn": 1, "attn_proj": 2, "mlp": 3}
MASK64 = (1 << 64) - 1


def _mix64_int(z):
    """splitmix64's output function on a Python int (for keys)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _mix64(z):
    """The same on a numpy uint64 array (multiplication wraps mod 2^64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def counter_u64(key, index):
    """mix64(key + (index + 1) * GOLDEN) for a uint64 index array."""
    with np.errstate(over="ignore"):
        return _mix64(np.uint64(key) + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * GOLDEN)


def dropout_key(seed, step, layer, site):
    k = _mix64_int(seed ^ DROPOUT_TAG)
    k = _mix64_int(k ^ (step & 0xFFFFFFFF))
    return _mix64_int(k ^ ((((layer + 1) & 0xFFFFFFFF) << 8) | SITES.get(site, site)))


def noise_key(seed, step):
    return _mix64_int(_mix64_int(seed ^ NOISE_TAG) ^ (step & 0xFFFFFFFF))


def dropout_threshold(p):
    return int(np.floor(float(np.float32(p)) * 16777216.0))


def dropout_scale(p):
    return np.float32(1.0) / (np.float32(1.0) - np.float32(p))


def dropout_factor(key, n, p):
    """float32 (n,): element i is 0 (dropped) or 1/(1-p) (kept), as dropout_factor() in C."""
    bits = counter_u64(key, np.arange(n, dtype=np.uint64)) >> np.uint64(40)
    keep = bits >= np.uint64(dropout_threshold(p))
    return np.where(keep, dropout_scale(p), np.float32(0.0)).astype(np.float32)


class CounterDropout:
    """dropout_mask for dev.model.GPT reproducing the trainers' masks for training step .step.

    GPT multiplies by the returned keep mask and by 1/(1-p) itself, so this returns the 0/1 mask
    (dropout_factor != 0) of the site's row-major element index."""

    def __init__(self, seed, p, step=1):
        self.seed, self.p, self.step = int(seed), float(p), int(step)

    def __call__(self, site, layer, shape):
        n = int(np.prod(shape))
        key = dropout_key(self.seed, self.step, layer, site)
        keep = dropout_factor(key, n, self.p) != 0
        return torch.from_numpy(keep.reshape(shape))


def weight_noise(config, seed, step, sigma):
    """dict name -> float32 noise (checkpoint shapes) of training step `step`."""
    key = noise_key(seed, step)
    out, offset = {}, 0
    for name, shape in param_shapes(config).items():
        size = int(np.prod(shape))
        if name in ("wte", "lm_head"):
            span = config.vocab_size * config.n_embd
        elif name == "qkvb" and not config.qkv_bias:
            span = 0
        else:
            span = size
        j = np.arange(offset, offset + span, dtype=np.uint64)
        u1 = ((counter_u64(key, np.uint64(2) * j) >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53
        u2 = (counter_u64(key, np.uint64(2) * j + np.uint64(1)) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(6.283185307179586 * u2)
        noise = np.zeros(size, dtype=np.float32)
        noise[:span] = (float(np.float32(sigma)) * z).astype(np.float32)
        out[name] = noise.reshape(shape)
        offset += size
    assert list(out)[:len(PARAM_NAMES)] == list(PARAM_NAMES)
    return out
