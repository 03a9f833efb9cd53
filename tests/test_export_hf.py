"""dev/export_hf.py: checkpoint -> transformers GPT-2 folder, and the round trip back.

Checks, on a small random model with GPT-2's vocabulary (V=50257, L=2, NH=2,
C=32, maxT=32, every tensor random with scale 0.3 so the logits are spread out
and greedy choices are never near-ties):
  - the folder has config.json, model.safetensors, vocab.json, merges.txt;
  - transformers' GPT2LMHeadModel.from_pretrained(folder) gives the reference
    model's logits (dev.model.GPT on the same checkpoint) to max abs 1e-5: the
    same fp32 math in another order (transformers picks sdpa attention); with
    logits up to ~11 the rounding difference seen is 6e-6, while a wrong
    transpose or a dropped layer gives O(1);
  - the exported tokenizer (GPT2TokenizerFast and GPT2Tokenizer from the
    folder, and from vocab.json + merges.txt alone) encodes "Hello world" as
    [15496, 995] and agrees with tiktoken on a mixed text; merges.txt starts
    with GPT-2's first merges and has 50000 lines after the version line;
  - greedy generation from transformers equals dev.sample's --greedy command
    line token for token (24 new tokens after "Once upon a time");
  - a model with another vocabulary (V=101) exports without a tokenizer and
    says so; a missing checkpoint or an existing --out-dir without --force
    exits 1 with a message, and so does an --out-dir under a file, in /proc,
    empty (with --force), a file, one that --force must not delete (it holds
    the current folder or the checkpoint, or it is not an export), and a full
    disk (RLIMIT_FSIZE), leaving no temporary folder behind.
The C trainer's greedy sample is not compared here yet (its sampler is
mirrored by dev/sample.py, which tests/test_sample.py checks against
llmc/sampler.h).
Run: python -m pytest -q tests/test_export_hf.py
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from dev.checkpoint import ModelConfig
from dev.export_hf import main as export_main
from dev.model import GPT
from dev.sample import main as sample_main
from helpers import file_size_limit, make_checkpoint, REPO

LOGITS_TOL = 1e-5
CONFIG = ModelConfig(max_seq_len=32, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)


def run_module(module, *args, timeout=300, cwd=REPO, preexec_fn=None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn,
                          env=dict(os.environ, GPT2_TOKENIZER_SOURCE="asset", PYTHONPATH=REPO))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint path, export folder) for the V=50257 model, exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    ckpt = root / "model.bin"
    # scale 0.3, seed 1: a varied greedy continuation whose top-2 logit gaps are >= 0.01
    make_checkpoint(ckpt, CONFIG, seed=1, scale=0.3)
    out = root / "hf"
    assert export_main([str(ckpt), "--out-dir", str(out)]) == 0
    return ckpt, out


def test_files_and_logits(exported):
    from transformers import GPT2LMHeadModel
    ckpt, out = exported
    files = set(os.listdir(out))
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"):
        assert name in files, f"{name} missing from {sorted(files)}"
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    ref = GPT.from_checkpoint(ckpt).eval()
    idx = torch.randint(0, CONFIG.vocab_size, (3, CONFIG.max_seq_len),
                        generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = hf(idx).logits
        ours = ref(idx)[0][..., :CONFIG.vocab_size]
    diff = (theirs - ours).abs()
    worst = np.unravel_index(int(diff.argmax()), diff.shape)
    assert diff.max().item() <= LOGITS_TOL, (
        f"logits max abs diff {diff.max().item():.3g} > {LOGITS_TOL} at (b, t, v) = {worst}")
    assert ours.std().item() > 0.1, "logits too flat to make the comparison meaningful"


def test_tokenizer(exported, tmp_path):
    from transformers import GPT2Tokenizer, GPT2TokenizerFast
    from dev.tokenizer import get_gpt2_encoding
    _, out = exported
    only = tmp_path / "classic"
    only.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(out / name, only / name)
    enc = get_gpt2_encoding(verbose=False)
    text = "Once upon a time, Lily's dog ran 42 km\n\n  to the café! 😀"
    for cls in (GPT2TokenizerFast, GPT2Tokenizer):
        for folder in (out, only):
            tok = cls.from_pretrained(folder)
            assert tok("Hello world")["input_ids"] == [15496, 995], (cls.__name__, folder)
            assert tok(text)["input_ids"] == enc.encode(text), (cls.__name__, folder)
            assert tok.decode(enc.encode(text)) == text
    lines = (out / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[1:4] == ["Ġ t", "Ġ a", "h e"], lines[:4]
    assert len([ln for ln in lines[1:] if ln]) == 50000
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256 and vocab["Hello"] == 15496


def test_greedy_generation_matches_dev_sample(exported, tmp_path):
    from transformers import GPT2LMHeadModel
    ckpt, out = exported
    n_new = 24
    js = tmp_path / "sample.json"
    # dev.sample's command line, in this process (saves a torch import)
    assert sample_main(["--model", str(ckpt), "--prompt", "Once upon a time", "--greedy",
                        "--max-new-tokens", str(n_new), "--out-json", str(js)]) == 0
    got = json.loads(js.read_text())
    prompt = got["prompt_ids"]
    assert prompt == [7454, 2402, 257, 640]
    ours = got["samples"][0]["ids"]
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    with torch.no_grad():
        seq = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new,
                          pad_token_id=50256)[0].tolist()
    theirs = seq[len(prompt):]
    assert len(ours) == n_new and len(set(ours)) > 3, f"degenerate continuation {ours}"
    with torch.no_grad():  # no near-ties, or rounding could legitimately flip a choice
        logits = GPT.from_checkpoint(ckpt)(torch.tensor([prompt + ours]))[0][0, :, :50257]
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min().item() > 1e-3
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    assert ours == theirs, f"greedy continuations differ at new token {first}: {ours} vs {theirs}"


def test_other_vocab_exports_without_tokenizer(tmp_path, capsys):
    from transformers import GPT2LMHeadModel
    cfg = ModelConfig(max_seq_len=8, vocab_size=101, n_layer=1, n_head=2, n_embd=16)
    ckpt = tmp_path / "m.bin"
    make_checkpoint(ckpt, cfg, seed=2)
    assert export_main([str(ckpt), "--out-dir", str(tmp_path / "hf")]) == 0
    assert "tokenizer: NOT exported" in capsys.readouterr().out
    assert not (tmp_path / "hf" / "vocab.json").exists()
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.arange(8).view(1, 8) * 11 % 101
    with torch.no_grad():
        diff = (hf(idx).logits - GPT.from_checkpoint(ckpt)(idx)[0][..., :101]).abs().max().item()
    assert diff <= LOGITS_TOL, f"logits max abs diff {diff:.3g} > {LOGITS_TOL}"


def test_untied_head_exports_its_own_lm_head(tmp_path):
    """An untied model exports lm_head.weight with tie_word_embeddings false; reloaded, the logits
    are the reference's, and converting back (create_model.py --from-hf) gives the same tensors."""
    from transformers import GPT2LMHeadModel
    from dev.model import from_hf
    cfg = ModelConfig(max_seq_len=8, vocab_size=101, n_layer=1, n_head=2, n_embd=16, untied_head=True)
    ckpt = tmp_path / "m.bin"
    make_checkpoint(ckpt, cfg, seed=4)
    assert export_main([str(ckpt), "--out-dir", str(tmp_path / "hf")]) == 0
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert not hf.config.tie_word_embeddings
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    ours = GPT.from_checkpoint(ckpt)
    idx = torch.arange(8).view(1, 8) * 13 % 101
    with torch.no_grad():
        diff = (hf(idx).logits - ours(idx)[0][..., :101]).abs().max().item()
    assert diff <= LOGITS_TOL, f"logits max abs diff {diff:.3g} > {LOGITS_TOL}"
    back = from_hf(hf)
    assert back.config.untied_head
    for name, arr in ours.params_numpy().items():
        assert np.array_equal(back.params_numpy()[name], arr), name


def test_errors(tmp_path, exported):
    ckpt, out = exported
    r = run_module("dev.export_hf", tmp_path / "missing.bin", "--out-dir", tmp_path / "x")
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_module("dev.export_hf", ckpt, "--out-dir", out)
    assert r.returncode == 1 and "--force" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("case", ["under a file", "in /proc", "empty with --force", "a file",
                                  "holds the current folder", "holds the checkpoint", "not an export",
                                  "full disk"])
def test_bad_out_dir(tmp_path, exported, case):
    """Each --out-dir is refused with `error:` naming it and exit 1; nothing is deleted and no
    temporary folder is left. The current-folder case runs in a scratch folder, so a broken
    check could only delete that."""
    ckpt, _ = exported
    (tmp_path / "file").write_text("x")
    (tmp_path / "work").mkdir()
    (tmp_path / "config.json").write_text("{}")  # looks like an export: only the cwd rule applies
    cwd, extra, limit = REPO, [], None
    if case == "holds the checkpoint":
        shutil.copy(ckpt, tmp_path / "model.bin")
        ckpt = tmp_path / "model.bin"
    out, needle = {
        "under a file": (tmp_path / "file" / "hf", "file is a file, not a folder"),
        "in /proc": ("/proc/nonexistent_dir", "cannot create the folder /proc/.nonexistent_dir.tmp."),
        "empty with --force": ("", "--out-dir is empty"),
        "a file": (tmp_path / "file", "is a file, not a folder"),
        "holds the current folder": (tmp_path, "--force would delete the folder you are working in"),
        "holds the checkpoint": (tmp_path, "--force would delete the checkpoint being exported"),
        "not an export": (tmp_path / "work", "holds files but no config.json"),
        "full disk": (tmp_path / "hf", "failed (write: File too large: free some disk space"),
    }[case]
    if case == "holds the current folder":
        cwd = tmp_path / "work"
    if case == "not an export":
        (tmp_path / "work" / "notes.txt").write_text("keep me")
    if case == "full disk":
        limit = file_size_limit(64 * 1024)
    if case in ("empty with --force", "holds the current folder", "holds the checkpoint", "not an export"):
        extra = ["--force"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run_module("dev.export_hf", ckpt, "--out-dir", out, *extra, cwd=cwd, preexec_fn=limit)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(out) in r.stderr or case == "empty with --force", r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "files changed or left behind"
    assert not [n for n in os.listdir("/proc") if n.startswith(".nonexistent_dir")]
