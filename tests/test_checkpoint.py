"""Model checkpoint format (dev/checkpoint.py): round trips, sizes, and every validation error.

Checks: write -> read is bit-exact for every tensor (QKV bias on and off), the
header slots and exact file size match README "File formats", the tensor
names/shapes equal README's table, num_parameters matches the closed form,
and each malformed file (missing, wrong magic, wrong version, truncated, too
long, non-positive dimensions or dimensions beyond llmc/gpt2_params.h's
bounds (checked before any size is computed), Vp not V rounded up to 128, bad no_qkv_bias flag,
non-zero qkvb with the flag set, NaN values) raises CheckpointError whose
message names the file, what was found and what was expected. A write that
fails (a full disk, a folder in the way) raises UserError naming the file,
removes its temporary file and leaves the previous file unchanged. The
training-state reader (dev/train_state.py) refuses step or total steps above
2^30, B*T above 2^24, T above 2^20, P outside [1, 2^40] and a bad
has_init_params flag before it computes a size, as llmc/train_state.h does.
Run: python -m pytest -q tests/test_checkpoint.py
"""

import os
import re

import numpy as np
import pytest

from dev.checkpoint import (PARAM_NAMES, CheckpointError, ModelConfig, checkpoint_file_size,
                            num_parameters, param_shapes, read_checkpoint, write_checkpoint)
from dev.errors import UserError
from helpers import make_checkpoint, random_params, REPO


def patch_header(path, slot, value):
    with open(path, "r+b") as f:
        f.seek(4 * slot)
        f.write(np.array([value], dtype="<i4").tobytes())


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_round_trip_bit_exact(tmp_path, tiny_config, qkv_bias):
    config = ModelConfig(**{**tiny_config.__dict__, "qkv_bias": qkv_bias})
    params = random_params(config, seed=3)
    path = tmp_path / "m.bin"
    write_checkpoint(path, config, params)
    assert os.path.getsize(path) == 1024 + 4 * num_parameters(config) == checkpoint_file_size(config)
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:9]) == [20240326, 3, 64, 500, 2, 2, 64, 512, 0 if qkv_bias else 1]
    assert not header[9:].any(), "unused header slots must be zero"
    config2, params2 = read_checkpoint(path)
    assert config2 == config
    assert list(params2) == list(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert params2[name].dtype == np.float32
        diff = np.abs(params2[name] - params[name]).max()
        assert params2[name].shape == params[name].shape and diff == 0, f"{name}: max abs diff {diff}"


def test_write_is_atomic_and_leaves_no_temp(tmp_path, tiny_config):
    path = tmp_path / "m.bin"
    write_checkpoint(path, tiny_config, random_params(tiny_config))
    write_checkpoint(path, tiny_config, random_params(tiny_config, seed=1))  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["m.bin"]


def test_failed_write_removes_temp_and_keeps_old_file(tmp_path, tiny_config, monkeypatch):
    """A disk that fills during the write: UserError naming the file and the fix, no
    temporary file left, the checkpoint that was there before unchanged."""
    import errno
    import dev.files
    path = tmp_path / "m.bin"
    write_checkpoint(path, tiny_config, random_params(tiny_config))
    before = path.read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(dev.files.os, "fsync", full_disk)
    with pytest.raises(UserError, match="free some disk space") as info:
        write_checkpoint(path, tiny_config, random_params(tiny_config, seed=1))
    monkeypatch.setattr(dev.files.os, "fsync", real_fsync)
    assert f"writing {path} failed (flush: No space left on device" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["m.bin"] and path.read_bytes() == before


def test_write_to_a_folder_or_under_a_file(tmp_path, tiny_config):
    with pytest.raises(UserError, match="it is a folder"):
        write_checkpoint(tmp_path, tiny_config, random_params(tiny_config))
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(UserError, match="cannot create folder .*f is a file, not a folder"):
        write_checkpoint(tmp_path / "f" / "m.bin", tiny_config, random_params(tiny_config))
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_shapes_match_readme_table(tiny_config):
    """The 16 names and shapes in README's table equal PARAM_NAMES / param_shapes."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    rows = re.findall(r"\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*(\([^)]*\))\s*\|", text)
    table = {int(i): (name, shape) for i, name, shape in rows}
    assert sorted(table) == list(range(1, 17)), f"README table rows found: {sorted(table)}"
    c = tiny_config
    symbols = dict(Vp=c.padded_vocab_size, C=c.n_embd, maxT=c.max_seq_len, L=c.n_layer)
    shapes = param_shapes(c)
    for i, name in enumerate(PARAM_NAMES, 1):
        readme_name, readme_shape = table[i]
        assert readme_name == name, f"README row {i} is {readme_name}, code says {name}"
        exprs = [re.sub(r"(\d)([A-Za-z])", r"\1*\2", d) for d in readme_shape.strip("()").split(",")]
        dims = tuple(eval(e, {}, symbols) for e in exprs)  # "4C" -> 4*C
        assert dims == shapes[name], f"{name}: README {readme_shape} -> {dims}, code {shapes[name]}"


@pytest.mark.parametrize("L,C,maxT,V", [(12, 768, 1024, 50257), (2, 64, 64, 500), (3, 48, 7, 129)])
def test_num_parameters_closed_form(L, C, maxT, V):
    config = ModelConfig(max_seq_len=maxT, vocab_size=V, n_layer=L, n_head=4, n_embd=C)
    Vp = -(-V // 128) * 128
    assert config.padded_vocab_size == Vp
    assert num_parameters(config) == Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C


def test_gpt2_124m_size():
    d12 = ModelConfig(max_seq_len=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)
    assert d12.padded_vocab_size == 50304
    assert num_parameters(d12) == 124_475_904
    assert checkpoint_file_size(d12) == 497_904_640


def test_write_rejects_bad_shapes(tmp_path, tiny_config):
    params = random_params(tiny_config)
    params["fcw"] = params["fcw"][:, :-1]
    with pytest.raises(ValueError, match="fcw"):
        write_checkpoint(tmp_path / "m.bin", tiny_config, params)
    assert not os.path.exists(tmp_path / "m.bin")


# ---- every validation error -------------------------------------------------------------
@pytest.fixture
def ckpt(tmp_path, tiny_config):
    return make_checkpoint(tmp_path / "model.bin", tiny_config)


def expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in message: {msg}"
    return msg


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.bin", "does not exist", "create_model.py")


def test_wrong_magic(ckpt):
    patch_header(ckpt, 0, 20240520)
    expect_error(ckpt, "magic number 20240520", "expected 20240326")


def test_wrong_version(ckpt):
    patch_header(ckpt, 1, 4)
    expect_error(ckpt, "version 4", "expected 3")


def test_llmc_bf16_version_names_the_converter(ckpt):
    patch_header(ckpt, 1, 5)
    expect_error(ckpt, "version 5", "bfloat16", "python -m dev.convert_llmc")


def test_truncated_header(ckpt):
    with open(ckpt, "r+b") as f:
        f.truncate(100)
    expect_error(ckpt, "truncated", "100 bytes")


def test_truncated_body(ckpt, tiny_config):
    size = checkpoint_file_size(tiny_config)
    with open(ckpt, "r+b") as f:
        f.truncate(size - 4)
    expect_error(ckpt, "truncated", f"{size - 4} bytes", f"expected {size}")


def test_too_long(ckpt, tiny_config):
    with open(ckpt, "ab") as f:
        f.write(b"\0" * 8)
    expect_error(ckpt, "too long", f"expected {checkpoint_file_size(tiny_config)}")


@pytest.mark.parametrize("slot,value,fragment", [
    (4, 0, "L=0"), (6, -64, "C=-64"), (2, 0, "maxT=0"),
])
def test_non_positive_dims(ckpt, slot, value, fragment):
    patch_header(ckpt, slot, value)
    expect_error(ckpt, fragment, "expected all > 0")


@pytest.mark.parametrize("slot,value,fragment", [
    (2, 2**20 + 1, "maxT=1048577 (at most 1048576)"), (3, 70000, "V=70000 (at most 65536)"),
    (4, 4097, "L=4097 (at most 4096)"), (6, 2**31 - 1, "C=2147483647 (at most 65536)"),
    (5, 128, "NH=128 (at most C)"),
])
def test_dims_out_of_range(ckpt, slot, value, fragment):
    """Bounds of llmc/gpt2_params.h, checked before any size is computed from the header."""
    patch_header(ckpt, slot, value)
    expect_error(ckpt, "dimensions out of range", fragment)


def test_dims_at_the_bounds_are_a_size_error(ckpt):
    """maxT, L, C at their bounds: P is 2.1e14 floats; the exact-size check refuses the file
    before anything is allocated."""
    for slot, value in [(2, 2**20), (4, 4096), (5, 1), (6, 65536)]:
        patch_header(ckpt, slot, value)
    expect_error(ckpt, "truncated", "expected 844")


def test_c_not_divisible_by_nh(ckpt):
    patch_header(ckpt, 5, 3)
    expect_error(ckpt, "C=64 is not divisible by NH=3")


def test_vp_inconsistent(ckpt):
    patch_header(ckpt, 7, 640)
    expect_error(ckpt, "Vp=640", "expected 512")


def test_vocab_changed_changes_expected_size(ckpt):
    patch_header(ckpt, 3, 1000)  # V=1000 needs Vp=1024
    expect_error(ckpt, "Vp=512", "expected 1024")


def test_bad_no_qkv_bias_flag(ckpt):
    patch_header(ckpt, 8, 2)
    expect_error(ckpt, "no_qkv_bias", "= 2", "expected 0 or 1")


def test_no_qkv_bias_flag_with_nonzero_qkvb(ckpt):
    patch_header(ckpt, 8, 1)  # random_params gave qkvb non-zero values
    expect_error(ckpt, "no_qkv_bias=1", "qkvb")


def test_nan_values(ckpt):
    with open(ckpt, "r+b") as f:
        f.seek(1024 + 4 * 10)
        f.write(np.array([np.nan], dtype="<f4").tobytes())
    expect_error(ckpt, "NaN", "wte")


# ---- training state (dev/train_state.py, the file that goes beside a checkpoint) ----------
def write_state(path, P=6, step=2, total=4, B=2, T=8, has_init=0):
    """A training-state file as llmc/train_state.h writes it (zero m and v)."""
    h = np.zeros(256, dtype="<i4")
    h[:4] = [20261126, 1, step, total]
    h[4:6] = np.array([P], dtype="<u8").view("<i4")
    h[6:8] = [B, T]
    h[23] = has_init
    path.write_bytes(h.tobytes() + np.zeros(P * (2 + has_init), dtype="<f4").tobytes())
    return path


def test_train_state_reads(tmp_path):
    from dev.train_state import read_train_state
    st = read_train_state(write_state(tmp_path / "state_000002.bin", has_init=1))
    assert (st["step"], st["total_steps"], st["B"], st["T"], st["num_parameters"]) == (2, 4, 2, 8, 6)
    assert st["m"].shape == st["v"].shape == st["init_params"].shape == (6,)


@pytest.mark.parametrize("field,value,fragment", [
    ("step", 2**30 + 1, "step=1073741825"), ("step", -1, "step=-1"),
    ("total", 2**31 - 1, "total_steps=2147483647"), ("total", 0, "total_steps=0"),
    ("B", 4097, "B=4097 T=4096"), ("B", 2**31 - 1, "B=2147483647"), ("T", 2**20 + 1, "T=1048577"),
    ("P", 2**40 + 1, "P=1099511627777"), ("P", 0, "P=0"), ("has_init", 2, "has_init_params=2"),
])
def test_train_state_header_bounds(tmp_path, field, value, fragment):
    """llmc/train_state.h's bounds (step, total steps <= 2^30, B*T <= 2^24, T <= 2^20,
    1 <= P <= 2^40), checked before the size is computed: a UserError naming the file."""
    from dev.train_state import read_train_state
    kwargs = {field: value, **({"T": 4096} if field == "B" and value == 4097 else {})}
    path = tmp_path / "state.bin"
    if field == "P":  # no body: the header alone must be refused
        write_state(path, P=6)
        raw = bytearray(path.read_bytes())
        raw[16:24] = np.array([value], dtype="<u8").tobytes()
        path.write_bytes(bytes(raw))
    else:
        write_state(path, **kwargs)
    with pytest.raises(UserError) as info:
        read_train_state(path)
    msg = str(info.value)
    assert str(path) in msg and "invalid header" in msg and fragment in msg, msg
