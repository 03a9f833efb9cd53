"""The files the trainers read and write, as the tests build and read them.

  random_params(config, seed=0, scale=0.1)
                        dict name -> float32 array with every tensor random (LayerNorm weights
                        around 1, biases non-zero), padded wte rows zero, qkvb zero when the QKV
                        bias is off: exercises every tensor, unlike GPT-2 init
  make_checkpoint(path, config, seed=0, scale=0.1)
                        write a checkpoint of random_params(config, seed, scale) to path; returns path
  token_data(tmp_path, config), example_data(tmp_path, config)
                        small random token shards (two train files and val.bin) or example shards
                        (E=8, answers at positions 4 and every third 5) in tmp_path, and the
                        trainer's data flags for them
  same_files(a, b)      byte equality (a training state's wall-time slots left out)
  read_log(path), step_records(log), log_values(path)
                        the JSONL log as a list of dicts; only its per-step records; only its
                        deterministic part (per-step values and samples, no timings)
  check_png(path)       a figure of dev.plot's size that is not blank (tests/test_plot.py,
                        tests/test_run.py)
"""

import json

import numpy as np

from dev.checkpoint import param_shapes, write_checkpoint
from dev.shards import write_example_shard, write_token_shard


def random_params(config, seed=0, scale=0.1):
    """dict name -> float32 array with every tensor random (see the module docstring)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        arr = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name in ("ln1w", "ln2w", "lnfw"):
            arr += 1.0
        params[name] = arr
    params["wte"][config.vocab_size:] = 0.0
    if config.untied_head:
        params["lm_head"][config.vocab_size:] = 0.0
    if not config.qkv_bias:
        params["qkvb"][:] = 0.0
    return params


def make_checkpoint(path, config, seed=0, scale=0.1):
    """A checkpoint of random_params(config, seed, scale) at path; returns path."""
    write_checkpoint(path, config, random_params(config, seed, scale))
    return path


def token_data(tmp_path, config):
    rng = np.random.default_rng(1)
    write_token_shard(tmp_path / "train_0.bin", rng.integers(0, config.vocab_size, 1500))
    write_token_shard(tmp_path / "train_1.bin", rng.integers(0, config.vocab_size, 1100))
    write_token_shard(tmp_path / "val.bin", rng.integers(0, config.vocab_size, 900))
    return ["-i", tmp_path / "train_*.bin", "-j", tmp_path / "val.bin", "-b", 4, "-t", 32]


def example_data(tmp_path, config):
    rng = np.random.default_rng(2)
    E = 8
    for name, n in (("train.bin", 40), ("val.bin", 13)):
        tokens = rng.integers(0, config.vocab_size, (n, E))
        mask = np.zeros((n, E), dtype=np.uint8)
        mask[:, 4] = 1
        mask[::3, 5] = 1
        write_example_shard(tmp_path / name, tokens, mask, config.vocab_size)
    return ["-i", tmp_path / "train.bin", "-j", tmp_path / "val.bin", "-b", 6]


def same_files(a, b):
    """Byte equality; for training-state files the elapsed-seconds slots [21, 22] (wall time) are
    left out of the comparison."""
    da, db = bytearray(open(a, "rb").read()), bytearray(open(b, "rb").read())
    if "state_" in str(a):
        da[84:92] = db[84:92] = bytes(8)
    return da == db


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_records(log):
    return [r for r in log if "train_loss" in r and "error" not in r]


def log_values(path, keys=("train_loss", "train_acc", "val_loss", "val_acc", "lr", "grad_norm",
                           "param_norm")):
    """The deterministic part of a log: per-step values and samples (no timings)."""
    out = []
    for r in read_log(path):
        if "step" in r:
            out.append((r["step"], r.get("sample"), tuple(r.get(k) for k in keys)))
    return out


def check_png(path):
    """path is a PNG of dev.plot's size (FIGSIZE at DPI) that is not blank; returns (pixel std,
    fraction of non-white pixels)."""
    import os

    import matplotlib.image as mpimg
    from dev.plot import DPI, FIGSIZE
    width, height = int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI)
    assert os.path.exists(path), f"{path} was not written"
    img = mpimg.imread(path)
    assert img.shape[:2] == (height, width), f"{path}: {img.shape[:2]} != {(height, width)}"
    rgb = img[..., :3]
    std = float(rgb.std())
    inked = float((rgb.min(axis=2) < 0.95).mean())
    assert std > 0.05, f"{path} looks blank: pixel std {std:.4f}"
    assert inked > 0.01, f"{path} looks blank: only {inked:.2%} of pixels are not white"
    return std, inked
