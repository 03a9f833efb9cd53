"""dev/sample.py: prompted sampling, checked against closed forms and the C code it mirrors.

Checks:
  - pick_token: greedy is the first index of the maximum (ties included);
    top-k 1 is greedy for every coin; over an even grid of 20,000 coins each
    token's share equals its renormalized probability to 1/20,000 + 1e-6, and
    only the top-k / top-p set is ever picked (that set is computed here
    independently);
  - the Python Rng and sampler against llmc/rand.h + llmc/sampler.h compiled
    into a small C program: the first raw numbers are equal, and 2,000 picks
    from the same logits (with exact ties) and seed are identical for six
    settings of temperature / top-k / top-p (skipped without a C compiler);
  - generate() crops the context to maxT: with maxT=8 and a 12-token prompt,
    each new token equals the greedy choice from the last 8 tokens;
  - the CLI: GPT-2 prompts encode offline ("Hello world" -> [15496, 995]);
    word mode with the mod-97 tokenizer file ("3 + 4 =" -> [3, 97, 4, 98]);
    the same seed gives the same continuation, another seed another one;
    bad values and paths exit 1 with a message and no traceback, and so do,
    before any sampling, an --out-json that is a folder, under a file or
    empty, --device cuda where torch sees no GPU (CUDA_VISIBLE_DEVICES=""),
    an unknown or unsupported --device, a model whose header dims exceed
    the bounds and a tokenizer with a huge vocab size;
  - against the real C trainer (skipped when ./train_gpt2 is not built): a
    1-step run with -l 0 (weights unchanged) samples from the start token at
    20 tokens at temperature 0 and 1 with --seed 42 and -t 16; dev.sample's
    generate() from the same checkpoint, start token, seed and a 16-token
    context window gives the same token ids.
Run: python -m pytest -q tests/test_sample.py
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
from dev.model import GPT
from dev.errors import cli_main
from dev.sample import Rng, generate, mix_seed, pick_token, sampling_rng
from dev.sample import main as sample_main
from helpers import make_checkpoint, random_params, REPO

TRAINER = os.path.join(REPO, "train_gpt2")
CC = shutil.which("cc") or shutil.which("gcc")


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_sample(*args, capsys=None, env=None):
    """Run `python -m dev.sample ARGS`; in this process (through cli_main, as the module's
    __main__ does) when capsys is given, which saves the torch import of a new process."""
    if capsys is None:
        r = subprocess.run([sys.executable, "-m", "dev.sample", *map(str, args)], cwd=REPO,
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, GPT2_TOKENIZER_SOURCE="asset", **(env or {})))
        return Result(r.returncode, r.stdout, r.stderr)
    capsys.readouterr()
    try:
        cli_main(sample_main, [str(a) for a in args])
    except SystemExit as e:
        out = capsys.readouterr()
        return Result(e.code, out.out, out.err)
    raise AssertionError("cli_main returned without exiting")


def probs_of(logits, temperature):
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max())
    return p / p.sum()


def kept_set(probs, top_k, top_p):
    """The tokens top-k then top-p keep: most probable first, ties by id."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    if 0 < top_k < len(probs):
        order = order[:top_k]
    if top_p < 1.0:
        mass = 0.0
        for n, i in enumerate(order, 1):
            mass += probs[i]
            if mass >= top_p:
                return order[:n]
    return order


def test_pick_token_closed_forms():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32) * 2
    logits[[7, 31]] = logits.max() + 1.0  # a tie for the maximum: the first index wins
    assert pick_token(logits, 0.0) == 7
    assert all(pick_token(logits, 1.0, top_k=1, coin=c) == 7 for c in np.linspace(0, 0.999, 50))
    n = 20000
    coins = (np.arange(n) + 0.5) / n
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (1.0, 10, 0.6)):
        p = probs_of(logits, temperature)
        keep = kept_set(p, top_k, top_p)
        picks = np.array([pick_token(logits, temperature, top_k, top_p, c) for c in coins])
        outside = set(picks.tolist()) - set(keep)
        assert not outside, f"T={temperature} k={top_k} p={top_p}: picked {outside} outside {keep}"
        expected = np.zeros_like(p)
        expected[keep] = p[keep] / p[keep].sum()
        share = np.bincount(picks, minlength=len(p)) / n
        worst = int(np.argmax(np.abs(share - expected)))
        assert abs(share[worst] - expected[worst]) <= 1.0 / n + 1e-6, (
            f"T={temperature} k={top_k} p={top_p}: token {worst} share {share[worst]:.6f} "
            f"expected {expected[worst]:.6f}")


C_HARNESS = r"""
#include "llmc/rand.h"
#include "llmc/sampler.h"
int main(int argc, char** argv) {
    /* argv: logits_file V seed n temperature top_k top_p out_file */
    int V = atoi(argv[2]);
    unsigned long long seed = strtoull(argv[3], NULL, 10);
    int n = atoi(argv[4]);
    float* logits = (float*)malloc(sizeof(float) * V);
    FILE* f = fopen(argv[1], "rb");
    if (!f || fread(logits, sizeof(float), V, f) != (size_t)V) { return 2; }
    fclose(f);
    Rng raw; rng_seed(&raw, seed);
    unsigned long long first[4];
    for (int i = 0; i < 4; i++) { first[i] = rng_u64(&raw); }
    Rng r; rng_seed(&r, mix_seed(seed, 0x73616D706C65ULL));
    Sampler s; sampler_init(&s, V, (float)atof(argv[5]), atoi(argv[6]), (float)atof(argv[7]));
    FILE* out = fopen(argv[8], "wb");
    fwrite(first, sizeof(first[0]), 4, out);
    for (int i = 0; i < n; i++) {
        int t = sampler_pick(&s, logits, V, rng_float(&r));
        fwrite(&t, sizeof(int), 1, out);
    }
    fclose(out);
    return 0;
}
"""


@pytest.mark.skipif(CC is None or not os.path.exists(os.path.join(REPO, "llmc", "sampler.h")),
                    reason="needs a C compiler and llmc/sampler.h")
def test_matches_c_sampler_and_rng(tmp_path):
    src, exe = tmp_path / "harness.c", tmp_path / "harness"
    src.write_text(C_HARNESS)
    r = subprocess.run([CC, "-O2", "-std=gnu11", "-I", REPO, str(src), "-o", str(exe), "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    V, seed, n = 300, 20261122, 2000
    logits = (np.random.default_rng(1).standard_normal(V) * 2).astype(np.float32)
    logits[10:20] = logits[5]  # exact ties: ordered by token id in both
    (tmp_path / "logits.bin").write_bytes(logits.tobytes())
    raw = Rng(seed)
    py_first = [raw.u64() for _ in range(4)]
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0),
                                      (1.0, 0, 0.9), (0.8, 12, 0.8), (0.0, 0, 1.0)):
        out = tmp_path / "picks.bin"
        r = subprocess.run([str(exe), str(tmp_path / "logits.bin"), str(V), str(seed), str(n),
                            repr(temperature), str(top_k), repr(top_p), str(out)])
        assert r.returncode == 0
        data = out.read_bytes()
        c_first = np.frombuffer(data[:32], dtype="<u8").tolist()
        assert c_first == py_first, f"rng_u64 stream differs: C {c_first} vs Python {py_first}"
        c_picks = np.frombuffer(data[32:], dtype="<i4")
        rng = Rng(mix_seed(seed, 0x73616D706C65))
        py_picks = np.array([pick_token(logits, temperature, top_k, top_p, rng.float())
                             for _ in range(n)])
        bad = np.nonzero(c_picks != py_picks)[0]
        assert len(bad) == 0, (f"T={temperature} k={top_k} p={top_p}: {len(bad)} of {n} picks "
                               f"differ, first at draw {bad[0]}: C {c_picks[bad[0]]} vs "
                               f"Python {py_picks[bad[0]]}")


def test_generate_crops_context():
    cfg = ModelConfig(max_seq_len=8, vocab_size=64, n_layer=1, n_head=2, n_embd=16)
    model = GPT(cfg, init=False)
    model.load_params(random_params(cfg, seed=4, scale=0.5))
    prompt = [int(x) for x in np.random.default_rng(2).integers(0, 64, 12)]
    new = generate(model, prompt, 6, temperature=0.0, rng=Rng(0))
    ids = list(prompt)
    with torch.no_grad():
        for k in range(6):
            logits = model(torch.tensor([ids[-8:]]))[0][0, -1, :64]
            assert new[k] == int(torch.argmax(logits)), f"new token {k}"
            ids.append(new[k])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    gpt2 = ModelConfig(max_seq_len=32, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)
    mod = ModelConfig(max_seq_len=8, vocab_size=101, n_layer=1, n_head=2, n_embd=16)
    make_checkpoint(root / "gpt2.bin", gpt2, seed=5, scale=0.3)
    make_checkpoint(root / "mod.bin", mod, seed=6, scale=0.3)
    r = subprocess.run([sys.executable, "-m", "dev.mod_arith",
                        "--out-dir", str(root / "data")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return root


def test_cli_prompts_and_seeds(models, tmp_path, capsys):
    js = tmp_path / "a.json"
    r = run_sample("--model", models / "gpt2.bin", "--prompt", "Hello world", "--max-new-tokens", 5,
                   "--out-json", js)  # a real process: the module's entry point
    assert r.returncode == 0, r.stderr
    got = json.loads(js.read_text())
    assert got["prompt_ids"] == [15496, 995] and len(got["samples"][0]["ids"]) <= 5
    assert got["samples"][0]["text"].startswith("Hello world")

    tok = models / "data" / "tokenizer.bin"
    r = run_sample("--model", models / "mod.bin", "--tokenizer", tok, "--prompt", "3 + 4 =",
                   "--max-new-tokens", 4, "--no-stop-at-eot", "--temperature", 1.0, "--seed", 1,
                   "--num-samples", 3, "--out-json", js, capsys=capsys)
    assert r.returncode == 0, r.stderr
    got = json.loads(js.read_text())
    assert got["prompt_ids"] == [3, 97, 4, 98]
    samples = [s["ids"] for s in got["samples"]]
    assert all(len(s) == 4 and max(s) < 101 for s in samples)
    assert got["samples"][0]["text"].startswith("3 + 4 = ")
    js2 = tmp_path / "b.json"
    r = run_sample("--model", models / "mod.bin", "--tokenizer", tok, "--prompt", "3 + 4 =",
                   "--max-new-tokens", 4, "--no-stop-at-eot", "--seed", 1, "--num-samples", 3,
                   "--out-json", js2)
    assert [s["ids"] for s in json.loads(js2.read_text())["samples"]] == samples, "same seed, new output"
    r = run_sample("--model", models / "mod.bin", "--prompt-ids", "3,97,4,98", "--max-new-tokens", 4,
                   "--no-stop-at-eot", "--seed", 2, "--num-samples", 3, "--out-json", js2,
                   capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert [s["ids"] for s in json.loads(js2.read_text())["samples"]] != samples, "seed ignored"


@pytest.mark.parametrize("args, needle", [
    (("--temperature", "-1"), "--temperature -1.0 must be >= 0"),
    (("--top-p", "0"), "--top-p 0.0 must be in (0, 1]"),
    (("--top-k", "-2"), "--top-k -2 must be >= 0"),
    (("--max-new-tokens", "0"), "--max-new-tokens 0 must be >= 1"),
    (("--seed", "-1"), "--seed -1 must be in [0, 2^64 - 1]"),
    (("--seed", str(2**64)), f"--seed {2**64} must be in [0, 2^64 - 1]"),
    (("--model", "missing.bin"), "missing.bin: no such file"),
    (("--model", "MOD"), "not GPT-2's 50257"),
    (("--model", "MOD", "--tokenizer", "TOK", "--prompt", "3 plus 4"), "'plus' is not a token"),
    (("--model", "MOD", "--prompt-ids", "1,2,500"), "ids [500] are outside [0, 101)"),
    (("--model", "MOD", "--prompt-ids", "1,x"), "expected comma-separated integers"),
    (("--model", "TOK"), "not a model checkpoint"),
])
def test_cli_errors(models, args, needle, capsys):
    subst = {"MOD": models / "mod.bin", "TOK": models / "data" / "tokenizer.bin"}
    args = [subst.get(a, a) for a in args]
    if "--model" not in args:
        args = ["--model", models / "gpt2.bin", *args]
    # in this process through cli_main; the missing-model case also as a real process
    r = run_sample(*args, capsys=None if "missing.bin" in args else capsys)
    assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def patched_copy(src, dst, slot, value):
    """Copy of file src at dst with header int32 slot set to value."""
    raw = bytearray(src.read_bytes())
    raw[4 * slot:4 * slot + 4] = np.array([value], dtype="<i4").tobytes()
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("case", ["out-json is a folder", "out-json under a file", "out-json empty",
                                  "cuda without a GPU", "unknown device", "device torch has but we don't",
                                  "model dims out of range", "tokenizer with a huge vocab size"])
def test_cli_bad_outputs_devices_and_files(models, tmp_path, case, capsys):
    """Each refused with `error:` and exit 1 before any token is sampled (nothing on stdout),
    and no JSON file written."""
    (tmp_path / "file.json").write_text("{}")
    mod, tok = models / "mod.bin", models / "data" / "tokenizer.bin"
    base = ["--model", mod, "--prompt-ids", "3,97", "--max-new-tokens", 2]
    args, needle, env = {
        "out-json is a folder": (["--out-json", tmp_path], "--out-json", None),
        "out-json under a file": (["--out-json", tmp_path / "file.json" / "x.json"],
                                  "file.json is a file, not a folder", None),
        "out-json empty": (["--out-json", ""], "--out-json is empty", None),
        # CUDA_VISIBLE_DEVICES="" hides any GPU, so this is the no-GPU case on every machine
        "cuda without a GPU": (["--device", "cuda"], "--device cuda: no CUDA GPU is available here",
                               {"CUDA_VISIBLE_DEVICES": ""}),
        "unknown device": (["--device", "bogus"], "--device 'bogus' is not a device name", None),
        "device torch has but we don't": (["--device", "meta"], "runs on cpu, cuda[:N] or mps", None),
        "model dims out of range": (["--model", patched_copy(mod, tmp_path / "bad.bin", 4, 5000)],
                                    "bad.bin has dimensions out of range in its header: ", None),
        "tokenizer with a huge vocab size": (
            ["--tokenizer", patched_copy(tok, tmp_path / "bad_tok.bin", 2, 2**31 - 1)],
            "bad_tok.bin has vocab size 2147483647, expected 1 to 65536", None),
    }[case]
    if case == "out-json is a folder":
        needle = f"--out-json {tmp_path} is a folder, expected a file path"
    r = run_sample(*base, *args, capsys=None if env else capsys, env=env)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == "", "the error must come before any sampling"
    assert sorted(os.listdir(tmp_path)) == ["bad.bin", "bad_tok.bin", "file.json"]


@pytest.mark.skipif(not os.access(TRAINER, os.X_OK),
                    reason="./train_gpt2 is not built (run `make train_gpt2`)")
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_matches_trainer_sample(tmp_path, temperature):
    from dev.shards import write_token_shard
    cfg = ModelConfig(max_seq_len=32, vocab_size=500, n_layer=2, n_head=2, n_embd=32)
    make_checkpoint(tmp_path / "m.bin", cfg, seed=8, scale=0.3)
    write_token_shard(tmp_path / "train.bin", np.random.default_rng(0).integers(0, 500, 2000))
    args = ["-e", tmp_path / "m.bin", "-i", tmp_path / "train.bin", "-j", "", "--tokenizer", "",
            "-o", tmp_path / "run", "-b", 2, "-t", 16, "-x", 1, "-l", 0, "-s", 1, "-g", 20,
            "--temperature", temperature, "--seed", 42, "--threads", 1]
    r = subprocess.run([TRAINER, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    c_ids = [int(x) for x in next(x["sample"] for x in lines if "sample" in x).split()]
    # no tokenizer: the trainer starts from token V-1 and prints ids
    # and its window is its -t (16 < maxT 32): past 16 tokens the context slides
    py_ids = generate(GPT.from_checkpoint(tmp_path / "m.bin"), [cfg.vocab_size - 1], 20,
                      temperature, rng=sampling_rng(42), context=16)
    assert len(set(c_ids)) > 3, f"degenerate trainer sample {c_ids}"
    assert py_ids == c_ids, f"dev.sample {py_ids} vs train_gpt2 {c_ids}"
