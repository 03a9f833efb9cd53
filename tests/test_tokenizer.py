"""GPT-2 tokenizer (dev/tokenizer.py): exact ids offline, and llm.c's v2 tokenizer file.

Checks: the shipped ranks file has the expected sha256; the offline encoding
gives the published GPT-2 ids ("Hello world" -> [15496, 995],
"<|endoftext|>" -> 50256, "Once upon a time" -> [7454, 2402, 257, 640]) and
decodes back to the input on mixed text; when tiktoken's own gpt2 files are
cached, both encodings agree on that text; a damaged ranks file and a bad
source name are clear errors; the tokenizer file round-trips for GPT-2 and a
small custom vocabulary with llm.c's header, and malformed files are rejected.
Run: python -m pytest -q tests/test_tokenizer.py
"""

import hashlib
import os

import numpy as np
import pytest

from dev.tokenizer import (ASSET_PATH, ASSET_SHA256, TokenizerError, load_asset_ranks,
                           load_gpt2_encoding, read_tokenizer_file, tiktoken_cache_has_gpt2,
                           write_tokenizer_file)

MIXED = ("Once upon a time, there was a little girl named Lily. She said, \"I'm happy!\"\n\n"
         "It's 2024 -- isn't it?   Ünïcödé, 日本語, emoji 🙂 and tabs\tand trailing spaces   ")


@pytest.fixture(scope="module")
def enc():
    return load_gpt2_encoding("asset")[0]


def test_asset_sha256():
    with open(ASSET_PATH, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == ASSET_SHA256


def test_exact_gpt2_ids(enc):
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    assert enc.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert enc.encode(" the\n") == [262, 198]
    # plain-text encoding never produces the special token
    assert 50256 not in enc.encode_ordinary("<|endoftext|>")


def test_round_trip_mixed_text(enc):
    ids = enc.encode_ordinary(MIXED)
    assert enc.decode(ids) == MIXED
    assert max(ids) < 50256


@pytest.mark.skipif(not tiktoken_cache_has_gpt2(),
                    reason="tiktoken's gpt2 files are not cached here (offline); the asset is "
                           "checked against the published ids instead")
def test_asset_equals_tiktoken_download(enc):
    import tiktoken
    ref = tiktoken.get_encoding("gpt2")
    assert ref.encode_ordinary(MIXED) == enc.encode_ordinary(MIXED)
    assert ref._mergeable_ranks == enc._mergeable_ranks


def test_damaged_asset_is_an_error(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    data = open(ASSET_PATH, "rb").read()
    bad.write_bytes(data[:-10])
    with pytest.raises(TokenizerError, match="sha256"):
        load_asset_ranks(str(bad))


def test_unknown_source():
    with pytest.raises(TokenizerError, match="unknown"):
        load_gpt2_encoding("nope")


def test_tokenizer_file_gpt2(tmp_path, enc):
    path = tmp_path / "gpt2_tokenizer.bin"
    write_tokenizer_file(path, enc)
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:4]) == [20240328, 2, 50257, 50256]
    tokens, eot = read_tokenizer_file(path)
    assert eot == 50256 and len(tokens) == 50257
    assert tokens[50256] == b"<|endoftext|>"
    assert tokens[15496] == b"Hello" and tokens[995] == b" world"
    assert all(tokens[i] == enc.decode_single_token_bytes(i) for i in range(0, 50257, 97))
    assert os.path.getsize(path) == 1024 + sum(1 + len(t) for t in tokens)


def test_tokenizer_file_custom_vocab(tmp_path):
    vocab = [str(i).encode() for i in range(97)] + [b"+", b"=", b"<eot>", "é".encode()]
    path = tmp_path / "mod97_tokenizer.bin"
    write_tokenizer_file(path, vocab, eot_id=99)
    tokens, eot = read_tokenizer_file(path)
    assert tokens == vocab and eot == 99


def test_tokenizer_file_writer_rejects(tmp_path):
    with pytest.raises(ValueError, match="length"):
        write_tokenizer_file(tmp_path / "t.bin", [b"a", b""], eot_id=0)
    with pytest.raises(ValueError, match="eot_id"):
        write_tokenizer_file(tmp_path / "t.bin", [b"a"])


def test_tokenizer_file_errors(tmp_path):
    path = tmp_path / "t.bin"
    write_tokenizer_file(path, [b"a", b"bc", b"def"], eot_id=2)
    data = path.read_bytes()
    with pytest.raises(TokenizerError, match="does not exist"):
        read_tokenizer_file(tmp_path / "none.bin")
    path.write_bytes(data[:-2])
    with pytest.raises(TokenizerError, match="token 2"):
        read_tokenizer_file(path)
    path.write_bytes(data + b"x")
    with pytest.raises(TokenizerError, match="too long"):
        read_tokenizer_file(path)
    bad = bytearray(data)
    bad[0:4] = np.array([20240326], dtype="<i4").tobytes()
    path.write_bytes(bytes(bad))
    with pytest.raises(TokenizerError, match="magic number 20240326.*expected 20240328"):
        read_tokenizer_file(path)
