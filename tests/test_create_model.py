"""create_model.py and dev/configs.py: sizes of every named config, initialisation, CLI errors.

Checks: every named configuration's parameter count equals the closed form
P = Vp*C + maxT*C + L*(12*C*C + 13*C) + 2*C and its file size 1024 + 4P
(d12 = 124,475,904 floats, 497,904,640 bytes) without allocating; the CLI
writes a checkpoint of exactly that size for tiny, mod97 and d4 (each read
back and validated); the same seed gives identical bytes, another seed
different ones; GPT-2 init statistics (std 0.02, residual projections
0.02/sqrt(2L), LayerNorm 1/0, biases and padded rows 0; std within 5%, the
sampling error at these sizes is < 1%); --init pytorch gives PyTorch's own layer
defaults (each Linear's bound is that of a torch.nn.Linear of the same shape, uniform
moments, embeddings N(0, 1), LayerNorm 1/0) and header[9] records the scheme, which the
trainer prints, logs and keeps in the checkpoints it saves; overrides and --no-qkv-bias reach the
header; --from-hf converts a locally saved transformers model exactly; unknown
config, invalid override, a dimension beyond llmc/gpt2_params.h's bounds, a
model too big for the machine's memory (refused before allocating), a
negative seed, missing --from-hf folder, an --out that is a folder, under a
file or empty, and a full disk (RLIMIT_FSIZE in the child) exit 1 with an
`error:` line and no traceback; a failed write leaves no temporary file.
Run: python -m pytest -q tests/test_create_model.py
"""

import dataclasses
import math
import os

import numpy as np
import pytest

from dev.checkpoint import checkpoint_file_size, num_parameters, read_checkpoint, read_checkpoint_init
from dev.configs import NAMED_CONFIGS, resolve_config
from dev.errors import UserError
from dev.model import gpt2_init
from helpers import file_size_limit

EXPECTED = {  # name: (L, NH, C, maxT, V)
    "tiny": (2, 2, 64, 64, 500), "mod97": (2, 4, 128, 8, 101), "d4": (4, 4, 128, 256, 50257),
    "d12": (12, 12, 768, 1024, 50257), "d24": (24, 16, 1024, 1024, 50257),
    "d36": (36, 20, 1280, 1024, 50257), "d48": (48, 25, 1600, 1024, 50257),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_named_config_sizes(name):
    L, NH, C, maxT, V = EXPECTED[name]
    cfg = NAMED_CONFIGS[name]
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.max_seq_len, cfg.vocab_size) == (L, NH, C, maxT, V)
    Vp = math.ceil(V / 128) * 128
    P = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C
    assert num_parameters(cfg) == P
    assert checkpoint_file_size(cfg) == 1024 + 4 * P


def test_d12_is_gpt2_124m():
    assert num_parameters(NAMED_CONFIGS["d12"]) == 124_475_904
    assert checkpoint_file_size(NAMED_CONFIGS["d12"]) == 497_904_640


@pytest.mark.parametrize("name", ["tiny", "mod97", "d4"])
def test_cli_writes_exact_size(run_cli, tmp_path, name):
    out = tmp_path / f"{name}.bin"
    r = run_cli("create_model.py", "--config", name, "--out", out)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(out) == checkpoint_file_size(NAMED_CONFIGS[name])
    config, _ = read_checkpoint(out)
    assert config == NAMED_CONFIGS[name]
    assert str(out) in r.stdout


def test_dry_run_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "d48.bin"
    r = run_cli("create_model.py", "--config", "d48", "--out", out, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not out.exists()
    assert f"{num_parameters(NAMED_CONFIGS['d48']):,}" in r.stdout


def test_seed_determinism(run_cli, tmp_path):
    paths = []
    for i, seed in enumerate([7, 7, 8]):
        paths.append(tmp_path / f"m{i}.bin")
        r = run_cli("create_model.py", "--config", "tiny", "--seed", seed, "--out", paths[-1])
        assert r.returncode == 0, r.stderr
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b, "same seed must give identical bytes"
    assert a != c, "a different seed must give different weights"


def test_gpt2_init_statistics():
    cfg = resolve_config("tiny", n_embd=128, n_head=4, n_layer=3)
    p = gpt2_init(cfg, seed=0)
    V, L = cfg.vocab_size, cfg.n_layer
    for name, std in [("wte", 0.02), ("wpe", 0.02), ("qkvw", 0.02), ("fcw", 0.02),
                      ("attprojw", 0.02 / math.sqrt(2 * L)), ("fcprojw", 0.02 / math.sqrt(2 * L))]:
        arr = p[name][:V] if name == "wte" else p[name]
        assert abs(arr.std() / std - 1) < 0.05, f"{name}: std {arr.std():.5g}, expected {std:.5g}"
        assert abs(arr.mean()) < 3 * std / math.sqrt(arr.size) + 1e-7, f"{name}: mean {arr.mean():.3g}"
    assert np.all(p["wte"][V:] == 0), "padded wte rows must be zero"
    for name in ("ln1w", "ln2w", "lnfw"):
        assert np.all(p[name] == 1), name
    for name in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcprojb"):
        assert np.all(p[name] == 0), name


def test_pytorch_init_matches_torch_layer_defaults():
    import torch
    from dev.init import pytorch_init
    cfg = resolve_config("tiny", n_embd=128, n_head=4, n_layer=3)
    p = pytorch_init(cfg, seed=0)
    V, C = cfg.vocab_size, cfg.n_embd
    torch.manual_seed(0)
    layers = {"qkvw": torch.nn.Linear(C, 3 * C), "attprojw": torch.nn.Linear(C, C),
              "fcw": torch.nn.Linear(C, 4 * C), "fcprojw": torch.nn.Linear(4 * C, C)}
    bias_of = {"qkvw": "qkvb", "attprojw": "attprojb", "fcw": "fcb", "fcprojw": "fcprojb"}
    for name, layer in layers.items():
        for ours, theirs in ((p[name], layer.weight), (p[bias_of[name]], layer.bias)):
            theirs = theirs.detach().numpy()
            bound = 1 / math.sqrt(layer.in_features)
            # torch's kaiming_uniform_(a=sqrt(5)) and its bias rule both give U(-bound, bound)
            assert np.abs(theirs).max() <= bound and np.abs(ours).max() <= bound, name
            assert np.abs(ours).max() > 0.98 * bound, f"{name}: max {np.abs(ours).max():.4g} vs bound {bound:.4g}"
            std = bound / math.sqrt(3)  # of U(-b, b)
            assert abs(ours.std() / std - 1) < 0.05, f"{name}: std {ours.std():.4g}, expected {std:.4g}"
            assert abs(theirs.std() / std - 1) < 0.2, f"torch's own {name}: std {theirs.std():.4g}"
    for name in ("wte", "wpe"):
        arr = p[name][:V] if name == "wte" else p[name]
        assert abs(arr.std() - 1) < 0.05 and abs(arr.mean()) < 0.05, name  # nn.Embedding: N(0, 1)
    assert np.all(p["wte"][V:] == 0), "padded wte rows must be zero"
    for name in ("ln1w", "ln2w", "lnfw"):
        assert np.all(p[name] == 1), name
    for name in ("ln1b", "ln2b", "lnfb"):
        assert np.all(p[name] == 0), name
    no_bias = pytorch_init(dataclasses.replace(cfg, qkv_bias=False), seed=0)
    assert np.all(no_bias["qkvb"] == 0)


def test_init_is_recorded_and_kept_by_the_trainer(run_cli, tmp_path):
    for scheme in ("gpt2", "pytorch"):
        out = tmp_path / f"{scheme}.bin"
        r = run_cli("create_model.py", "--config", "tiny", "--init", scheme, "--out", out)
        assert r.returncode == 0, r.stderr
        assert f"init={scheme}" in r.stdout
        assert read_checkpoint_init(out) == scheme
    a, b = (read_checkpoint(tmp_path / f"{s}.bin")[1] for s in ("gpt2", "pytorch"))
    assert np.abs(b["wte"]).std() > 10 * np.abs(a["wte"]).std()
    # the trainer prints it, logs it and keeps it in what it saves
    from helpers import run_trainer, token_data
    cfg = NAMED_CONFIGS["tiny"]
    data = token_data(tmp_path, cfg)
    r = run_trainer("--model", tmp_path / "pytorch.bin", *data, "-o", tmp_path / "run", "--steps", 2,
                    "-v", 0, "-s", 0)
    assert "pytorch (how the starting weights were drawn" in r.stdout
    import json
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert first["config"]["init"] == "pytorch"
    assert read_checkpoint_init(tmp_path / "run" / "model_000002.bin") == "pytorch"
    from dev.checkpoint import write_checkpoint
    write_checkpoint(tmp_path / "plain.bin", cfg, a)  # as llm.c's own files: not recorded
    assert read_checkpoint_init(tmp_path / "plain.bin") == "not recorded"


def test_untied_head_adds_one_tensor(run_cli, tmp_path):
    """--untied-head: header[10] = 1 and lm_head (Vp, C) after the 16 tensors, which are the
    tied model's own bytes for the same seed (the head is drawn last); the tied file is llm.c's."""
    for flags, name in (((), "tied"), (("--untied-head",), "untied")):
        r = run_cli("create_model.py", "--config", "tiny", *flags, "--seed", 3, "--out", tmp_path / f"{name}.bin")
        assert r.returncode == 0, r.stderr
    tied, untied = (tmp_path / "tied.bin").read_bytes(), (tmp_path / "untied.bin").read_bytes()
    cfg = NAMED_CONFIGS["tiny"]
    Vp, C = cfg.padded_vocab_size, cfg.n_embd
    assert len(tied) == checkpoint_file_size(cfg) and len(untied) == len(tied) + 4 * Vp * C
    header = np.frombuffer(untied[:1024], dtype="<i4")
    assert header[10] == 1 and np.frombuffer(tied[:1024], dtype="<i4")[10] == 0
    assert untied[1024:len(tied)] == tied[1024:], "the 16 tensors are the tied model's"
    config, params = read_checkpoint(tmp_path / "untied.bin")
    assert config.untied_head and list(params)[-1] == "lm_head"
    head = params["lm_head"]
    assert np.all(head[cfg.vocab_size:] == 0) and abs(head[:cfg.vocab_size].std() / 0.02 - 1) < 0.05


def test_overrides_and_no_qkv_bias(run_cli, tmp_path):
    out = tmp_path / "m.bin"
    r = run_cli("create_model.py", "--config", "tiny", "--n-layer", 3, "--n-head", 4, "--n-embd", 32,
                "--seq-len", 16, "--vocab-size", 129, "--no-qkv-bias", "--out", out)
    assert r.returncode == 0, r.stderr
    header = np.fromfile(out, dtype="<i4", count=9)
    assert list(header) == [20240326, 3, 16, 129, 3, 4, 32, 256, 1]
    config, params = read_checkpoint(out)
    assert config.qkv_bias is False and np.all(params["qkvb"] == 0)


def test_from_hf_local_folder(run_cli, tmp_path, tiny_config):
    from helpers import random_params
    from dev.model import GPT, to_hf
    model = GPT(tiny_config, init=False)
    params = random_params(tiny_config, seed=9)
    model.load_params(params)
    to_hf(model).save_pretrained(tmp_path / "hf")
    out = tmp_path / "conv.bin"
    r = run_cli("create_model.py", "--from-hf", tmp_path / "hf", "--out", out)
    assert r.returncode == 0, r.stderr
    config, back = read_checkpoint(out)
    assert config == tiny_config
    for name, arr in params.items():
        assert np.array_equal(back[name], arr), name


@pytest.mark.parametrize("args,fragment", [
    (["--config", "d5"], "unknown model configuration 'd5'"),
    (["--config", "tiny", "--seed", "-1"], "--seed -1: must be in [0, 2^64 - 1]"),
    (["--config", "tiny", "--n-embd", "2147483648"], "n_embd = 2147483648 exceeds 65536"),
    (["--config", "tiny", "--n-layer", "4097"], "n_layer = 4097 exceeds 4096"),
    (["--config", "tiny", "--seq-len", "1048577"], "max_seq_len = 1048577 exceeds 1048576"),
    # within the bounds, but 844 TB of weights: refused before anything is allocated
    (["--config", "tiny", "--n-embd", "65536", "--n-layer", "4096"],
     "GiB of memory, more than this machine's"),
    (["--config", "tiny", "--n-head", "3"], "not divisible by n_head (NH) = 3"),
    (["--config", "tiny", "--vocab-size", "0"], "vocab_size = 0 must be a positive integer"),
    (["--config", "tiny", "--vocab-size", "70000"], "exceeds 65536"),
    (["--from-hf", "./no/such/folder"], "no such folder"),
    (["--from-hf", "./x", "--n-layer", "2"], "drop --n-layer"),
])
def test_cli_errors(run_cli, tmp_path, args, fragment):
    r = run_cli("create_model.py", *args, "--out", tmp_path / "m.bin")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m.bin").exists()


def test_resolve_config_unknown_name():
    with pytest.raises(UserError, match="choose one of tiny, mod97, d4, d12"):
        resolve_config("gpt5")


@pytest.mark.parametrize("where", ["folder", "under a file", "empty"])
def test_cli_bad_out_path(run_cli, tmp_path, where):
    (tmp_path / "file.bin").write_bytes(b"x")
    out, fragment = {"folder": (tmp_path, "is a folder, expected a file path"),
                     "under a file": (tmp_path / "file.bin" / "m.bin", "file.bin is a file, not a folder"),
                     "empty": ("", "--out is empty")}[where]
    r = run_cli("create_model.py", "--config", "tiny", "--out", out)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: --out") and fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["file.bin"]


def test_cli_full_disk(run_cli, tmp_path):
    """A write that fails (EFBIG, as a full disk gives ENOSPC) names the file, says to free
    disk space, leaves no temporary file, and keeps the file that was there before."""
    out = tmp_path / "m.bin"
    out.write_bytes(b"previous")
    r = run_cli("create_model.py", "--config", "tiny", "--out", out, preexec_fn=file_size_limit(64 * 1024))
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith(f"error: writing {out} failed") and "free some disk space" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.bin"] and out.read_bytes() == b"previous"
