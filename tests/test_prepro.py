"""prepro_tinystories.py: deterministic shards, EOT placement, input kinds, errors, embedded corpus.

Checks (each through the real CLI in a subprocess, on a small corpus the test
writes itself): two runs with 2 workers and 1 worker give byte-identical val,
train and tokenizer files; every story is preceded by EOT 50256 and the tokens
between EOTs decode to the stripped story, in input order, data00.json being
validation; --max-stories and --shard-size (split shards concatenate to the
unsplit stream, stale shards of an earlier run are removed); .txt input with
--val-input; .tar.gz input equals the folder; missing input, bad JSON, a
record without "story", an empty input and a folder without shards exit 1
with a message; so do an --out-dir that is a file, under a file or empty
(before any tokenizing) and a full disk (RLIMIT_FSIZE), which leaves the
previous run's files in --out-dir unchanged and no temporary file. Finally the embedded corpus (dev/data/embedded_stories/)
goes through the whole Python pipeline after a failed download:
prepro -> token shards -> create_model.py -> reference model trains a few
steps on shard batches and its loss falls.
Run: python -m pytest -q tests/test_prepro.py
"""

import glob
import json
import os
import tarfile

import numpy as np
import pytest

from dev.shards import read_token_shard
from dev.tokenizer import get_gpt2_encoding, read_tokenizer_file
from helpers import file_size_limit, REPO

EOT = 50256
NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Zoë"]


def make_story(rng, i):
    name = NAMES[i % len(NAMES)]
    words = " ".join(rng.choice(["sun", "ball", "tree", "happy", "ran", "big", "red", "café"],
                                size=rng.integers(5, 30)))
    return f"  Story {i}: {name} saw a {words}.\n\"Hi!\" said {name}. It's fun.  \n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Folder with data00.json .. data02.json (40, 30, 30 stories); returns (folder, shards)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    shards, k = [], 0
    for n_stories, s in zip([40, 30, 30], range(3)):
        stories = []
        for _ in range(n_stories):
            stories.append(make_story(rng, k))
            k += 1
        with open(folder / f"data{s:02d}.json", "w", encoding="utf-8") as f:
            json.dump([{"story": t, "summary": "x", "source": "test"} for t in stories], f)
        shards.append(stories)
    return folder, shards


def run_prepro(run_cli, *args):
    r = run_cli("prepro_tinystories.py", *args)
    return r


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def split_at_eot(tokens):
    """List of token lists, one per story; asserts the stream starts with EOT."""
    assert tokens.size and tokens[0] == EOT, "the stream must start with EOT"
    starts = np.flatnonzero(tokens == EOT).tolist() + [tokens.size]
    return [tokens[a + 1:b].tolist() for a, b in zip(starts[:-1], starts[1:])]


def test_deterministic_across_runs_and_workers(run_cli, corpus, tmp_path):
    folder, _ = corpus
    outs = []
    for i, workers in enumerate([2, 1]):
        out = tmp_path / f"o{i}"
        ok(run_prepro(run_cli, "--input", folder, "--out-dir", out, "--workers", workers))
        outs.append(out)
    for name in ["TinyStories_val.bin", "TinyStories_train.bin", "gpt2_tokenizer.bin"]:
        a, b = ((o / name).read_bytes() for o in outs)
        assert a == b, f"{name} differs between the 2-worker and the 1-worker run"


def test_eot_placement_and_order(run_cli, corpus, tmp_path):
    folder, shards = corpus
    r = ok(run_prepro(run_cli, "--input", folder, "--out-dir", tmp_path, "--workers", 2))
    enc = get_gpt2_encoding(verbose=False)
    val = read_token_shard(tmp_path / "TinyStories_val.bin")
    train = read_token_shard(tmp_path / "TinyStories_train.bin")
    for split, tokens, stories in [("val", val, shards[0]), ("train", train, shards[1] + shards[2])]:
        pieces = split_at_eot(tokens)
        assert len(pieces) == len(stories), f"{split}: {len(pieces)} EOTs for {len(stories)} stories"
        for j, (piece, story) in enumerate(zip(pieces, stories)):
            assert piece == enc.encode_ordinary(story.strip()), f"{split} story {j} tokens differ"
        assert f"{tokens.size:,} tokens" in r.stdout
    toks, eot = read_tokenizer_file(tmp_path / "gpt2_tokenizer.bin")
    assert eot == EOT and len(toks) == 50257


def test_max_stories_and_shard_size(run_cli, corpus, tmp_path):
    folder, shards = corpus
    out = tmp_path / "o"
    ok(run_prepro(run_cli, "--input", folder, "--out-dir", out, "--workers", 1))
    full_train = read_token_shard(out / "TinyStories_train.bin")
    # a second run into the same folder with small shards replaces the single file
    ok(run_prepro(run_cli, "--input", folder, "--out-dir", out, "--workers", 1, "--shard-size", 300))
    parts = sorted(glob.glob(str(out / "TinyStories_train*.bin")))
    assert len(parts) == -(-full_train.size // 300) and parts[0].endswith("TinyStories_train_000.bin")
    assert not (out / "TinyStories_train.bin").exists(), "stale single-file shard must be removed"
    sizes = [read_token_shard(p).size for p in parts]
    assert all(s == 300 for s in sizes[:-1]) and 0 < sizes[-1] <= 300
    assert np.array_equal(np.concatenate([read_token_shard(p) for p in parts]), full_train)
    out2 = tmp_path / "o2"
    ok(run_prepro(run_cli, "--input", folder, "--out-dir", out2, "--workers", 1, "--max-stories", 5))
    assert len(split_at_eot(read_token_shard(out2 / "TinyStories_val.bin"))) == 5
    train5 = read_token_shard(out2 / "TinyStories_train.bin")
    assert len(split_at_eot(train5)) == 5
    assert np.array_equal(train5, full_train[:train5.size])


def test_text_input_with_val_input(run_cli, corpus, tmp_path):
    _, shards = corpus
    train_txt, val_txt = tmp_path / "train.txt", tmp_path / "valid.txt"
    train_txt.write_text("<|endoftext|>".join(shards[1]), encoding="utf-8")
    val_txt.write_text("<|endoftext|>".join(shards[0]) + "<|endoftext|>\n", encoding="utf-8")
    out = tmp_path / "o"
    ok(run_prepro(run_cli, "--input", train_txt, "--val-input", val_txt, "--out-dir", out, "--workers", 1))
    assert len(split_at_eot(read_token_shard(out / "TinyStories_val.bin"))) == len(shards[0])
    assert len(split_at_eot(read_token_shard(out / "TinyStories_train.bin"))) == len(shards[1])
    # a lone .txt without --val-input: the first 1/20 (at least 1) is validation
    out2 = tmp_path / "o2"
    ok(run_prepro(run_cli, "--input", train_txt, "--out-dir", out2, "--workers", 1))
    assert len(split_at_eot(read_token_shard(out2 / "TinyStories_val.bin"))) == 1
    assert len(split_at_eot(read_token_shard(out2 / "TinyStories_train.bin"))) == len(shards[1]) - 1


def test_tar_gz_equals_folder(run_cli, corpus, tmp_path):
    folder, _ = corpus
    archive = tmp_path / "TinyStories_all_data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for p in sorted(folder.glob("*.json")):
            tar.add(p, arcname=p.name)
    ok(run_prepro(run_cli, "--input", archive, "--out-dir", tmp_path / "a", "--workers", 1))
    assert (tmp_path / "TinyStories_all_data" / "data00.json").exists()
    ok(run_prepro(run_cli, "--input", folder, "--out-dir", tmp_path / "b", "--workers", 1))
    for name in ["TinyStories_val.bin", "TinyStories_train.bin"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("setup,fragment", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: write(d / "bad" / "data00.json", '[{"story": "a"},'), "is not valid JSON"),
    (lambda d: write(d / "nostory.json", '[{"text": "a"}]'), "item 0 has no \"story\""),
    (lambda d: write(d / "notlist.json", '{"story": "a"}'), "expected a JSON list"),
    (lambda d: write(d / "empty.txt", "  \n<|endoftext|>\n"), "the input is empty"),
    (lambda d: (d / "emptydir").mkdir() or d / "emptydir", "holds no .json shards"),
])
def test_bad_input_exits_1(run_cli, tmp_path, setup, fragment):
    path = setup(tmp_path)
    r = run_prepro(run_cli, "--input", path, "--out-dir", tmp_path / "out", "--workers", 1)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(path.name) in r.stderr, r.stderr
    assert not glob.glob(str(tmp_path / "out" / "TinyStories_*.bin"))


@pytest.mark.parametrize("case", ["a file", "under a file", "empty"])
def test_bad_out_dir_exits_1(run_cli, corpus, tmp_path, case):
    """Refused before any tokenizing, naming the flag and the path."""
    (tmp_path / "file").write_text("x")
    out, needle = {"a file": (tmp_path / "file", "is a file, not a folder"),
                   "under a file": (tmp_path / "file" / "out", "file is a file, not a folder"),
                   "empty": ("", "--out-dir is empty")}[case]
    r = run_prepro(run_cli, "--input", corpus[0], "--out-dir", out, "--workers", 1)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: --out-dir") and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "tokenize" not in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("limit", [2048, 64 * 1024])
def test_full_disk_leaves_out_dir_as_it_was(run_cli, corpus, tmp_path, limit):
    """A full disk (RLIMIT_FSIZE in the child: 2 KiB fails the val shard after five train
    shards of 2024 bytes, 64 KiB the tokenizer file after every shard) names the file and
    the fix, and leaves
    --out-dir exactly as before: the previous run's files unchanged, no temporary files."""
    out = tmp_path / "out"
    ok(run_prepro(run_cli, "--input", corpus[0], "--out-dir", out, "--workers", 1, "--max-stories", 3))
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    r = run_cli("prepro_tinystories.py", "--input", corpus[0], "--out-dir", out, "--workers", 2,
                "--shard-size", 500, preexec_fn=file_size_limit(limit))
    assert r.returncode == 1, (r.returncode, r.stderr)
    last = r.stderr.strip().splitlines()[-1]  # after tqdm's progress lines
    name = "TinyStories_val.bin" if limit == 2048 else "gpt2_tokenizer.bin"
    assert last.startswith(f"error: writing {out / name} failed"), r.stderr
    assert "free some disk space" in last and "Traceback" not in r.stderr, r.stderr
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before


def test_embedded_corpus_whole_pipeline(run_cli, tmp_path):
    """Failed download -> embedded corpus -> shards -> create_model -> a few training steps."""
    import torch
    from dev.model import GPT
    embedded = os.path.join(REPO, "dev", "data", "embedded_stories")
    assert os.path.exists(os.path.join(embedded, "data00.json")), \
        f"the embedded corpus {embedded}/ (data00.json ...) is missing"
    out = tmp_path / "data"
    # port 9 (discard) on localhost refuses at once: the download fails fast and offline
    r = ok(run_prepro(run_cli, "--out-dir", out, "--download-dir", tmp_path / "dl", "--workers", 2,
                      "--url", "http://127.0.0.1:9/TinyStories_all_data.tar.gz"))
    assert "download failed" in r.stdout and "FALLING BACK to the embedded corpus" in r.stdout, r.stdout
    val = read_token_shard(out / "TinyStories_val.bin")
    train = read_token_shard(out / "TinyStories_train.bin")
    counts = [len(json.load(open(p, encoding="utf-8")))
              for p in sorted(glob.glob(os.path.join(embedded, "*.json")))]
    assert len(counts) >= 2, f"{embedded} needs a validation shard and training shards"
    assert len(split_at_eot(val)) == counts[0], "data00.json is the validation split"
    assert len(split_at_eot(train)) == sum(counts[1:]), "the other shards are the training split"

    ckpt = tmp_path / "model.bin"
    ok(run_cli("create_model.py", "--config", "tiny", "--vocab-size", 50257, "--seq-len", 32,
               "--out", ckpt))
    torch.manual_seed(0)
    model = GPT.from_checkpoint(ckpt)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    B, T = 8, 32
    data = torch.from_numpy(train[: B * T + 1].astype(np.int64))
    x, y = data[:-1].view(B, T), data[1:].view(B, T)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # GPT-2 init starts near uniform over 50257 tokens: ln(50257) = 10.82
    assert abs(losses[0] - np.log(50257)) < 0.5, losses
    assert losses[-1] < losses[0] - 1.0, f"loss did not fall on one repeated batch: {losses}"
