"""Token shards, example shards and parity files (dev/shards.py, dev/parity_files.py).

Checks: each format round-trips bit-exactly with the README header slots and
exact size; readers reject missing files, wrong magic, wrong version,
truncated and over-long files and inconsistent headers/bodies with a
ShardError / ParityFileError (UserError) naming the file and the numbers;
header fields beyond the C readers' bounds (example shard E > 2^20 + 1,
parity batch B*T > 2^24, parity gradients B*T, Vp, L, C) are refused before
a size is computed; dev's bound constants equal llmc's.
Run: python -m pytest -q tests/test_shards.py
"""

import os

import numpy as np
import pytest

from dev.checkpoint import PARAM_NAMES, param_shapes
from dev.errors import UserError
from dev.parity_files import (ParityFileError, read_parity_batch, read_parity_grads,
                              read_parity_losses, write_parity_batch, write_parity_grads,
                              write_parity_losses)
from dev.shards import (ShardError, read_example_shard, read_token_shard, write_example_shard,
                        write_token_shard)
from helpers import random_params


def header_of(path):
    return np.fromfile(path, dtype="<i4", count=256)


def patch(path, slot, value):
    with open(path, "r+b") as f:
        f.seek(4 * slot)
        f.write(np.array([value], dtype="<i4").tobytes())


def raises(reader, path, error_cls, *fragments):
    with pytest.raises(error_cls) as info:
        reader(path)
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message: {msg}"


# ---- token shards -------------------------------------------------------------------------
def test_token_shard_round_trip(tmp_path):
    tokens = np.arange(70000) % 65536  # covers 0 and 65535
    path = tmp_path / "s.bin"
    write_token_shard(path, tokens)
    assert list(header_of(path)[:3]) == [20240520, 1, 70000]
    assert os.path.getsize(path) == 1024 + 2 * 70000
    back = read_token_shard(path)
    assert back.dtype == np.uint16 and np.array_equal(back, tokens)


def test_token_shard_empty_round_trip(tmp_path):
    write_token_shard(tmp_path / "e.bin", [])
    assert read_token_shard(tmp_path / "e.bin").size == 0


def test_token_shard_writer_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="65535"):
        write_token_shard(tmp_path / "s.bin", [1, 70000])


@pytest.fixture
def token_shard(tmp_path):
    path = tmp_path / "tok.bin"
    write_token_shard(path, np.arange(100))
    return path


def test_token_shard_missing(tmp_path):
    raises(read_token_shard, tmp_path / "none.bin", ShardError, "does not exist", "prepro_tinystories.py")


def test_token_shard_wrong_magic(token_shard):
    patch(token_shard, 0, 20240326)
    raises(read_token_shard, token_shard, ShardError, "magic number 20240326", "expected 20240520")


def test_token_shard_wrong_version(token_shard):
    patch(token_shard, 1, 2)
    raises(read_token_shard, token_shard, ShardError, "version 2", "expected 1")


def test_token_shard_truncated(token_shard):
    with open(token_shard, "r+b") as f:
        f.truncate(1024 + 150)
    raises(read_token_shard, token_shard, ShardError, "truncated", "1174 bytes", "expected 1224")


def test_token_shard_count_too_large(token_shard):
    patch(token_shard, 2, 101)
    raises(read_token_shard, token_shard, ShardError, "truncated", "expected 1226")


def test_token_shard_too_long(token_shard):
    with open(token_shard, "ab") as f:
        f.write(b"\0\0")
    raises(read_token_shard, token_shard, ShardError, "too long", "expected 1224")


def test_token_shard_header_truncated(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\0" * 10)
    raises(read_token_shard, path, ShardError, "truncated", "10 bytes")


# ---- example shards ----------------------------------------------------------------------
def make_examples(N=5, E=6, V=101, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(N, E))
    mask = np.zeros((N, E), dtype=np.uint8)
    mask[:, -1] = 1  # only the answer token is scored
    return tokens, mask


def test_example_shard_round_trip(tmp_path):
    tokens, mask = make_examples()
    path = tmp_path / "ex.bin"
    write_example_shard(path, tokens, mask, 101)
    assert list(header_of(path)[:5]) == [20261122, 1, 5, 6, 101]
    assert os.path.getsize(path) == 1024 + 3 * 5 * 6
    t, m, v = read_example_shard(path)
    assert t.dtype == np.uint16 and m.dtype == np.uint8 and v == 101
    assert np.array_equal(t, tokens) and np.array_equal(m, mask)


@pytest.mark.parametrize("change,match", [
    (lambda t, m: m.__setitem__((0, 0), 1), "column 0"),
    (lambda t, m: m.__setitem__((1, 2), 2), "0 or 1"),
    (lambda t, m: t.__setitem__((2, 3), 101), "vocab_size"),
])
def test_example_shard_writer_rejects(tmp_path, change, match):
    tokens, mask = make_examples()
    change(tokens, mask)
    with pytest.raises(ValueError, match=match):
        write_example_shard(tmp_path / "ex.bin", tokens, mask, 101)


@pytest.fixture
def example_shard(tmp_path):
    tokens, mask = make_examples()
    path = tmp_path / "ex.bin"
    write_example_shard(path, tokens, mask, 101)
    return path


def poke(path, offset, value, dtype):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.array([value], dtype=dtype).tobytes())


def test_example_shard_wrong_magic(example_shard):
    patch(example_shard, 0, 20240520)
    raises(read_example_shard, example_shard, ShardError, "magic number 20240520", "expected 20261122")


def test_example_shard_wrong_version(example_shard):
    patch(example_shard, 1, 7)
    raises(read_example_shard, example_shard, ShardError, "version 7", "expected 1")


def test_example_shard_bad_header(example_shard):
    patch(example_shard, 3, 1)
    raises(read_example_shard, example_shard, ShardError, "E=1", "2 <= E <= 1048577")


def test_example_shard_truncated(example_shard):
    with open(example_shard, "r+b") as f:
        f.truncate(1024 + 3 * 5 * 6 - 1)
    raises(read_example_shard, example_shard, ShardError, "truncated", "expected 1114")


def test_example_shard_token_above_bound(example_shard):
    poke(example_shard, 1024 + 2 * (6 * 2 + 4), 200, "<u2")  # example 2, position 4
    raises(read_example_shard, example_shard, ShardError, "token 200", "example 2 position 4", "V bound 101")


def test_example_shard_bad_mask(example_shard):
    poke(example_shard, 1024 + 2 * 30 + 6 * 3 + 1, 5, "u1")  # example 3, position 1
    raises(read_example_shard, example_shard, ShardError, "mask byte 5", "example 3 position 1")


def test_example_shard_mask_byte0(example_shard):
    poke(example_shard, 1024 + 2 * 30 + 6 * 4, 1, "u1")  # example 4, position 0
    raises(read_example_shard, example_shard, ShardError, "example 4", "mask byte 0")


@pytest.mark.parametrize("E", [2**31 - 1, 2**20 + 2])
def test_example_shard_huge_e(example_shard, E):
    """E beyond maxT's bound + 1 (llmc/dataloader.h) is refused before N*E is computed."""
    patch(example_shard, 3, E)
    raises(read_example_shard, example_shard, ShardError, f"E={E}", "2 <= E <= 1048577")


# ---- parity files ------------------------------------------------------------------------
@pytest.mark.parametrize("with_mask", [False, True])
def test_parity_batch_round_trip(tmp_path, with_mask):
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, 500, (3, 7)), rng.integers(0, 500, (3, 7))
    mask = rng.integers(0, 2, (3, 7)) if with_mask else None
    path = tmp_path / "batch.bin"
    write_parity_batch(path, inputs, targets, mask)
    assert list(header_of(path)[:5]) == [20261123, 1, 3, 7, int(with_mask)]
    assert os.path.getsize(path) == 1024 + 4 * 21 * (2 + with_mask)
    b = read_parity_batch(path)
    inp, tgt, m = b  # unpacks like a tuple
    assert np.array_equal(inp, inputs) and np.array_equal(b.targets, targets)
    assert (m is None) if not with_mask else np.array_equal(m, mask)


def test_parity_grads_round_trip(tmp_path, tiny_config):
    grads = random_params(tiny_config, seed=5)
    logits = np.random.default_rng(2).standard_normal((2, 3, 512)).astype(np.float32)
    path = tmp_path / "grads.bin"
    write_parity_grads(path, 2.5, logits, grads)
    P = tiny_config.num_parameters
    assert list(header_of(path)[:8]) == [20261124, 1, 2, 3, 512, P, 2, 64]
    assert os.path.getsize(path) == 1024 + 4 * (1 + 2 * 3 * 512 + P)
    r = read_parity_grads(path)
    assert r["loss"] == 2.5 and np.array_equal(r["logits"], logits)
    assert list(r["grads"]) == list(PARAM_NAMES)
    for name, shape in param_shapes(tiny_config).items():
        assert r["grads"][name].shape == shape and np.array_equal(r["grads"][name], grads[name]), name


def test_parity_grads_inconsistent_p(tmp_path, tiny_config):
    path = tmp_path / "grads.bin"
    write_parity_grads(path, 1.0, np.zeros((1, 1, 512)), random_params(tiny_config))
    patch(path, 5, tiny_config.num_parameters + 1)
    raises(read_parity_grads, path, ParityFileError, "inconsistent", f"P={tiny_config.num_parameters + 1}")


def test_parity_grads_truncated(tmp_path, tiny_config):
    path = tmp_path / "grads.bin"
    write_parity_grads(path, 1.0, np.zeros((1, 1, 512)), random_params(tiny_config))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 4)
    raises(read_parity_grads, path, ParityFileError, "truncated")


def test_parity_losses_round_trip_and_errors(tmp_path):
    path = tmp_path / "losses.bin"
    losses = np.array([3.5, 3.25, 3.0], dtype=np.float32)
    write_parity_losses(path, losses)
    assert list(header_of(path)[:3]) == [20261125, 1, 3]
    assert np.array_equal(read_parity_losses(path), losses)
    patch(path, 1, 9)
    raises(read_parity_losses, path, ParityFileError, "version 9")
    raises(read_parity_batch, tmp_path / "none.bin", ParityFileError, "does not exist")
    raises(read_parity_batch, path, ParityFileError, "magic number 20261125", "expected 20261123")


@pytest.mark.parametrize("B,T", [(2**31 - 1, 2**31 - 1), (4097, 4096)])
def test_parity_batch_too_many_tokens(tmp_path, B, T):
    """B*T above 2^24 (llmc/train_limits.h), whether or not B*T would wrap in int32/int64."""
    path = tmp_path / "batch.bin"
    write_parity_batch(path, np.zeros((2, 3)), np.zeros((2, 3)))
    patch(path, 2, B)
    patch(path, 3, T)
    raises(read_parity_batch, path, ParityFileError, f"B={B} T={T}", "B*T at most 16777216")


@pytest.mark.parametrize("slot,value", [(2, 2**31 - 1), (4, 65664), (6, 4097), (7, 65537)])
def test_parity_grads_header_bounds(tmp_path, tiny_config, slot, value):
    path = tmp_path / "grads.bin"
    write_parity_grads(path, 1.0, np.zeros((1, 1, 512)), random_params(tiny_config))
    patch(path, slot, value)
    raises(read_parity_grads, path, ParityFileError, f"={value}", "at most")


def test_bounds_equal_the_c_headers():
    """dev's copies of the bounds equal llmc/gpt2_params.h and llmc/train_limits.h."""
    import re
    from helpers import REPO
    from dev import checkpoint, train_limits, train_state

    def defines(name):
        text = open(os.path.join(REPO, "llmc", name), encoding="utf-8").read()
        return {k: eval(v.replace("(uint64_t)", ""))  # noqa: S307 - integer expressions only
                for k, v in re.findall(r"#define (\w+) (\([^/\n]*\)|\d+)", text)}
    c = {**defines("gpt2_params.h"), **defines("train_limits.h"), **defines("train_state.h")}
    assert c["GPT2_MAX_SEQ_LEN"] == checkpoint.MAX_SEQ_LEN
    assert c["GPT2_MAX_VOCAB"] == checkpoint.MAX_VOCAB
    assert c["GPT2_MAX_LAYERS"] == checkpoint.MAX_LAYERS
    assert c["GPT2_MAX_CHANNELS"] == checkpoint.MAX_CHANNELS
    assert c["TRAIN_MAX_STEPS"] == train_limits.MAX_STEPS
    assert c["TRAIN_MAX_TOKENS_PER_STEP"] == train_limits.MAX_TOKENS_PER_STEP
    assert c["TRAIN_STATE_MAX_PARAMS"] == train_state.MAX_PARAMS
