"""GPT-2 tokenizer (dev/tokenizer.py): exact ids offline, and llm.c's v2 tokenizer file.

Checks: the shipped ranks file has the expected sha256; the offline encoding
gives the published GPT-2 ids ("Hello world" -> [15496, 995],
"<|endoftext|>" -> 50256, "Once upon a time" -> [7454, 2402, 257, 640]) and
decodes back to the input on mixed text; when tiktoken's own gpt2 files are
cached, both encodings agree on that text; a damaged ranks file and a bad
source name are clear errors; the tokenizer file round-trips for GPT-2 and a
small custom vocabulary with llm.c's header, and malformed files are rejected;
a table of crafted files (bad version, vocab size 0 / 65537 / 2^31-1, n past
the body, EOT out of range, zero-length token, trailing bytes, truncation;
and the accepted edge cases: version 1, 65536 tokens, 255-byte tokens) gets
the same verdict, vocab size and EOT from read_tokenizer_file and from
llmc/tokenizer.h compiled into a probe (skipped without a C compiler).
Run: python -m pytest -q tests/test_tokenizer.py
"""

import hashlib
import os
import shutil
import subprocess

import numpy as np
import pytest

from dev.tokenizer import (ASSET_PATH, ASSET_SHA256, TokenizerError, load_asset_ranks,
                           load_gpt2_encoding, read_tokenizer_file, tiktoken_cache_has_gpt2,
                           write_tokenizer_file)
from helpers import REPO

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


def tokenizer_bytes(tokens, n=None, eot=0, version=2, tail=b""):
    """Raw tokenizer file: header (magic, version, n, eot) + length-prefixed tokens + tail."""
    header = np.zeros(256, dtype="<i4")
    header[:4] = [20240328, version, len(tokens) if n is None else n, eot]
    return header.tobytes() + b"".join(bytes([len(t)]) + t for t in tokens) + tail


ABC = [b"a", b"bc", b"def"]
# name -> file bytes; the comment says whether llmc/tokenizer.h accepts it
TOKENIZER_FILES = {
    "valid": tokenizer_bytes(ABC, eot=2),                                   # accepted
    "255-byte token": tokenizer_bytes([b"x" * 255, b"y"], eot=1),            # accepted
    "65536 tokens": tokenizer_bytes([b"t"] * 65536, eot=65535),              # accepted
    "version 1, GPT-2 size": tokenizer_bytes([b"t"] * 50257, eot=-7, version=1),  # accepted, EOT 50256
    "version 1, small": tokenizer_bytes(ABC, version=1),                     # EOT 50256 >= n
    "version 3": tokenizer_bytes(ABC, version=3),
    "vocab size 0": tokenizer_bytes(ABC, n=0),
    "vocab size 65537": tokenizer_bytes([b"t"] * 65537),
    "huge vocab size": tokenizer_bytes(ABC, n=2**31 - 1),
    "negative vocab size": tokenizer_bytes(ABC, n=-1),
    "n larger than the body": tokenizer_bytes(ABC, n=5),
    "header only": tokenizer_bytes([], n=1),
    "EOT -1": tokenizer_bytes(ABC, eot=-1),
    "EOT = n": tokenizer_bytes(ABC, eot=3),
    "zero-length token": tokenizer_bytes([b"a", b"", b"def", b"g"], eot=0),
    "truncated inside a token": tokenizer_bytes(ABC, eot=2)[:-1],
    "trailing bytes": tokenizer_bytes(ABC, eot=2, tail=b"\x01x"),
    "one trailing byte": tokenizer_bytes(ABC, eot=2, tail=b"\x00"),
    "fewer tokens than n": tokenizer_bytes([b"abcdef"], n=3),
}
ACCEPTED = {"valid", "255-byte token", "65536 tokens", "version 1, GPT-2 size"}

C_TOKENIZER_PROBE = r"""
#include "llmc/tokenizer.h"
int main(int argc, char** argv) {
    (void)argc;
    Tokenizer t;
    tokenizer_init(&t, argv[1]);
    printf("%d %d\n", t.vocab_size, t.eot_token);
    tokenizer_free(&t);
    return 0;
}
"""


@pytest.mark.parametrize("name", list(TOKENIZER_FILES))
def test_tokenizer_file_bounds(tmp_path, name):
    """Every header field bounded before the body is read: refused files raise TokenizerError
    naming the file; the accepted ones give the right size and EOT."""
    path = tmp_path / "tok.bin"
    path.write_bytes(TOKENIZER_FILES[name])
    if name in ACCEPTED:
        tokens, eot = read_tokenizer_file(path)
        header = np.frombuffer(TOKENIZER_FILES[name][:16], dtype="<i4")
        assert len(tokens) == header[2] and eot == (header[3] if header[1] == 2 else 50256)
    else:
        with pytest.raises(TokenizerError) as info:
            read_tokenizer_file(path)
        assert str(path) in str(info.value)


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_tokenizer_file_python_and_c_agree(tmp_path):
    """llmc/tokenizer.h tokenizer_init and dev.tokenizer.read_tokenizer_file accept exactly
    the same files, with the same vocab size and EOT."""
    src, exe = tmp_path / "probe.c", tmp_path / "probe"
    src.write_text(C_TOKENIZER_PROBE)
    r = subprocess.run(["cc", "-O1", "-std=gnu11", "-I", REPO, str(src), "-o", str(exe), "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name, data in TOKENIZER_FILES.items():
        path = tmp_path / "tok.bin"
        path.write_bytes(data)
        c = subprocess.run([str(exe), str(path)], capture_output=True, text=True)
        try:
            tokens, eot = read_tokenizer_file(path)
            py = f"{len(tokens)} {eot}"
        except TokenizerError as e:
            py = None
            assert c.returncode == 1 and c.stderr.startswith("error: tokenizer file"), \
                f"{name}: Python refuses ({e}) but C gives exit {c.returncode}: {c.stdout}{c.stderr}"
        if py is not None:
            assert c.returncode == 0 and c.stdout.strip() == py, \
                f"{name}: Python reads {py}, C gives exit {c.returncode}: {c.stdout}{c.stderr}"
        assert (py is not None) == (name in ACCEPTED), name
