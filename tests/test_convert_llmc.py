"""llm.c's bfloat16 checkpoints (version 5): python -m dev.convert_llmc converts them exactly.

The version-5 file is written the way llm.c's train_gpt2.py write_model(..., "bfloat16")
describes its format: the version-3 header with [1] = 5 (slots 8.. zero), then the 16 tensors
in checkpoint order, wte padded to Vp rows, each value as torch's bfloat16 (round to nearest
even) in little-endian 16-bit words. Checks: the converted file's tensors equal torch's
bf16 -> fp32 upcast bit for bit, its header is version 3 with the same dimensions and "not
recorded" init; the CPU trainer trains the converted model; the trainer and dev.checkpoint
refuse the version-5 file naming the converter (tests/helpers/bad_inputs.py "llm.c bf16
model" for the trainer); the converter refuses a version-3 input, extra header slots, a
truncated body, a NaN and an existing output without --force, with clear errors.
Run: python -m pytest -q tests/test_convert_llmc.py
"""

import numpy as np
import pytest
import torch

from dev.checkpoint import PARAM_NAMES, param_shapes, read_checkpoint, read_checkpoint_init
from helpers import random_params, read_log, run_trainer, token_data


def write_llmc_bf16(path, config, params):
    """A version-5 file as llm.c writes it; returns the bf16 values as fp32 (the exact upcast)."""
    header = np.zeros(256, dtype="<i4")
    header[:8] = [20240326, 5, config.max_seq_len, config.vocab_size, config.n_layer, config.n_head,
                  config.n_embd, config.padded_vocab_size]
    upcast = {}
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for name in PARAM_NAMES:
            t = torch.from_numpy(np.ascontiguousarray(params[name])).to(torch.bfloat16)
            f.write(t.view(torch.int16).numpy().astype("<i2").tobytes())
            upcast[name] = t.float().numpy()
    return upcast


@pytest.fixture
def bf16_model(tmp_path, tiny_config):
    params = random_params(tiny_config, seed=4, scale=0.05)
    path = tmp_path / "llmc_bf16.bin"
    return path, write_llmc_bf16(path, tiny_config, params)


def test_converts_exactly_and_trains(tmp_path, tiny_config, bf16_model, run_cli):
    src, upcast = bf16_model
    out = tmp_path / "model.bin"
    r = run_cli("dev.convert_llmc", src, out)
    assert r.returncode == 0, r.stderr
    assert "version 5" in r.stdout and "version 3" in r.stdout
    header = np.fromfile(out, dtype="<i4", count=256)
    assert list(header[:8]) == [20240326, 3, 64, 500, 2, 2, 64, 512] and not header[8:].any()
    config, params = read_checkpoint(out)
    assert config == tiny_config and read_checkpoint_init(out) == "not recorded"
    for name in PARAM_NAMES:
        assert np.array_equal(params[name].view(np.uint32), upcast[name].view(np.uint32)), name
        # the low 16 bits of every value are zero: nothing was invented by the upcast
        assert not (params[name].view(np.uint32) & 0xFFFF).any(), name
    r = run_trainer("--model", out, *token_data(tmp_path, config), "--steps", 3, "-v", 3, "-o", tmp_path / "run")
    records = [x for x in read_log(tmp_path / "run" / "log.jsonl") if "train_loss" in x]
    assert [x["step"] for x in records] == [1, 2, 3] and all(np.isfinite(x["train_loss"]) for x in records)


def test_trainer_and_reader_name_the_converter(bf16_model):
    from dev.checkpoint import CheckpointError, read_checkpoint_config
    src, _ = bf16_model
    with pytest.raises(CheckpointError, match="python -m dev.convert_llmc"):
        read_checkpoint_config(src)
    r = run_trainer("--model", src, "--steps", 1, check=False)
    assert r.returncode == 1 and "version 5" in r.stderr and f"python -m dev.convert_llmc {src}" in r.stderr


def _patched(path, slot=None, value=None, truncate=None, nan_at=None):
    raw = bytearray(path.read_bytes())
    if slot is not None:
        raw[4 * slot:4 * slot + 4] = np.int32(value).tobytes()
    if nan_at is not None:
        raw[1024 + 2 * nan_at:1024 + 2 * nan_at + 2] = np.uint16(0x7FC0).tobytes()  # bf16 NaN
    if truncate is not None:
        raw = raw[:truncate]
    bad = path.with_name("bad.bin")
    bad.write_bytes(bytes(raw))
    return bad


@pytest.mark.parametrize("case,want", [
    ("version 3", ["version 3", "needs no conversion"]),
    ("extra slot", ["non-zero header slots [8]"]),
    ("truncated", ["truncated", "bfloat16 parameters"]),
    ("nan", ["NaN or inf", "wte"]),
])
def test_converter_refuses_bad_files(tmp_path, bf16_model, run_cli, case, want):
    src, _ = bf16_model
    bad = {"version 3": lambda: _patched(src, 1, 3), "extra slot": lambda: _patched(src, 8, 1),
           "truncated": lambda: _patched(src, truncate=src.stat().st_size - 2),
           "nan": lambda: _patched(src, nan_at=5)}[case]()
    r = run_cli("dev.convert_llmc", bad, tmp_path / "out.bin")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert str(bad) in r.stderr and all(w in r.stderr for w in want), r.stderr
    assert not (tmp_path / "out.bin").exists()


def test_converter_keeps_an_existing_output(tmp_path, bf16_model, run_cli):
    src, _ = bf16_model
    out = tmp_path / "model.bin"
    out.write_bytes(b"keep")
    r = run_cli("dev.convert_llmc", src, out)
    assert r.returncode == 1 and "--force" in r.stderr and out.read_bytes() == b"keep"
    assert run_cli("dev.convert_llmc", src, out, "--force").returncode == 0
    assert param_shapes(read_checkpoint(out)[0])
