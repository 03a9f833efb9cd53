"""GPT-2 tokenizer that works offline, and llm.c's v2 tokenizer file.

get_gpt2_encoding() returns a tiktoken Encoding with the exact GPT-2 ids
("Hello world" -> [15496, 995], "<|endoftext|>" -> 50256). Where it comes from:
  - tiktoken's own "gpt2" encoding, when tiktoken's cache already holds its two
    files or the network answers within a few seconds (the standard download);
  - otherwise dev/assets/gpt2.tiktoken, the GPT-2 BPE ranks shipped in the repo
    (taken from PyPI's openai-whisper source package; its sha256 is checked),
    with GPT-2's split pattern and <|endoftext|> = 50256.
The environment variable GPT2_TOKENIZER_SOURCE = auto (default) | tiktoken |
asset forces a choice. The first call prints which source was used.

write_tokenizer_file(path, encoding_or_token_bytes, eot_id) writes llm.c's
tokenizer file (decoding only): a 256-int32 header [0] 20240328, [1] 2,
[2] vocab size, [3] EOT id, then per token a uint8 length (1..255) and its bytes.
read_tokenizer_file(path) reads it (and version 1 files, EOT 50256), refusing
with TokenizerError exactly the files llmc/tokenizer.h refuses.
"""

import base64
import hashlib
import os
import sys
import tempfile
import threading

import numpy as np

from dev.binheader import HEADER_BYTES, make_header, read_header, write_file_atomic
from dev.errors import UserError

ASSET_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gpt2.tiktoken")
ASSET_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_EOT = 50256
GPT2_N_VOCAB = 50257
ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenizer split pattern (tiktoken's r50k_pat_str); used only if
# tiktoken_ext is missing.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
TIKTOKEN_HOST = "openaipublic.blob.core.windows.net"
TIKTOKEN_GPT2_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)

TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2
TOKENIZER_V1_EOT = 50256    # version 1 files have no EOT slot
TOKENIZER_MAX_VOCAB = 65536
SOURCES = ("auto", "tiktoken", "asset")


class TokenizerError(UserError):
    """The tokenizer could not be loaded, or a tokenizer file is malformed."""


def tiktoken_cache_has_gpt2():
    """True when tiktoken's download cache already holds both GPT-2 files."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return False
    return all(os.path.exists(os.path.join(cache_dir, hashlib.sha1(u.encode()).hexdigest()))
               for u in TIKTOKEN_GPT2_URLS)


def network_reachable(host, port=443, timeout=3.0):
    """True when a TCP connection to host:port opens within `timeout` seconds (DNS included)."""
    import socket
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def _gpt2_pattern():
    try:
        from tiktoken_ext.openai_public import r50k_pat_str
        return r50k_pat_str
    except ImportError:
        return GPT2_PAT_STR


def load_asset_ranks(path=ASSET_PATH):
    """dict bytes -> rank from a .tiktoken file (base64 token, space, rank per line), sha256-checked."""
    if not os.path.exists(path):
        raise TokenizerError(f"GPT-2 ranks file {path} is missing; restore it with "
                             f"`git checkout -- dev/assets/gpt2.tiktoken`.")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ASSET_SHA256:
        raise TokenizerError(f"GPT-2 ranks file {path} has sha256 {digest}, expected "
                             f"{ASSET_SHA256}: it is damaged; restore it with "
                             f"`git checkout -- dev/assets/gpt2.tiktoken`.")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _encoding_from_asset():
    import tiktoken
    return tiktoken.Encoding(name="gpt2", pat_str=_gpt2_pattern(),
                             mergeable_ranks=load_asset_ranks(),
                             special_tokens={ENDOFTEXT: GPT2_EOT},
                             explicit_n_vocab=GPT2_N_VOCAB)


def load_gpt2_encoding(source=None):
    """Load the GPT-2 encoding: returns (tiktoken.Encoding, description of the source).

    source: "auto" (default; or $GPT2_TOKENIZER_SOURCE), "tiktoken", "asset".
    """
    import tiktoken
    source = source or os.environ.get("GPT2_TOKENIZER_SOURCE", "") or "auto"
    if source not in SOURCES:
        raise TokenizerError(f"tokenizer source {source!r} (GPT2_TOKENIZER_SOURCE) is unknown; "
                             f"use one of {', '.join(SOURCES)}.")
    if source == "asset":
        return _encoding_from_asset(), f"{ASSET_PATH} (forced)"
    if source == "tiktoken":
        try:
            return tiktoken.get_encoding("gpt2"), "tiktoken's gpt2 encoding (forced)"
        except Exception as e:  # noqa: BLE001 - any download/cache failure
            raise TokenizerError(f"tiktoken could not load the gpt2 encoding ({e}); "
                                 f"unset GPT2_TOKENIZER_SOURCE to use the shipped ranks.") from e
    cached = tiktoken_cache_has_gpt2()
    if cached or network_reachable(TIKTOKEN_HOST):
        try:
            enc = tiktoken.get_encoding("gpt2")
            return enc, "tiktoken's gpt2 encoding (" + ("cached" if cached else "downloaded") + ")"
        except Exception as e:  # noqa: BLE001 - fall back to the shipped ranks
            why = f"tiktoken failed: {type(e).__name__}"
    else:
        why = "tiktoken's files are not cached and the network is unreachable"
    return _encoding_from_asset(), f"{ASSET_PATH} ({why})"


_CACHE = {}


def get_gpt2_encoding(source=None, verbose=True):
    """The GPT-2 tiktoken Encoding (cached per process); prints its source on first load."""
    key = source or os.environ.get("GPT2_TOKENIZER_SOURCE", "") or "auto"
    if key not in _CACHE:
        enc, desc = load_gpt2_encoding(key)
        _CACHE[key] = (enc, desc)
        if verbose:
            print(f"tokenizer: GPT-2 BPE from {desc}", file=sys.stderr)
    return _CACHE[key][0]


def gpt2_encoding_source(source=None):
    """Description of where get_gpt2_encoding(source) came from (loads it if needed)."""
    key = source or os.environ.get("GPT2_TOKENIZER_SOURCE", "") or "auto"
    get_gpt2_encoding(key, verbose=False)
    return _CACHE[key][1]


def write_tokenizer_file(path, encoding_or_token_bytes, eot_id=None):
    """Atomically write llm.c's v2 tokenizer file.

    encoding_or_token_bytes: a tiktoken Encoding (all n_vocab tokens, special
    ones as their text, eot_id defaulting to its eot_token) or a list of byte
    strings (str items are UTF-8 encoded), one per token id; eot_id is then
    required. Every token must be 1..255 bytes long.
    """
    obj = encoding_or_token_bytes
    if hasattr(obj, "decode_single_token_bytes"):
        tokens = [obj.decode_single_token_bytes(i) for i in range(obj.n_vocab)]
        if eot_id is None:
            eot_id = obj.eot_token
    else:
        tokens = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in obj]
        if eot_id is None:
            raise ValueError("write_tokenizer_file: eot_id is required for a list of tokens")
    n = len(tokens)
    if n < 1 or not (0 <= eot_id < n):
        raise ValueError(f"write_tokenizer_file: eot_id {eot_id} not in [0, {n})")
    bad = [i for i, t in enumerate(tokens) if not (1 <= len(t) <= 255)]
    if bad:
        raise ValueError(f"write_tokenizer_file: tokens {bad[:5]} have length outside 1..255")
    body = b"".join(bytes([len(t)]) + t for t in tokens)
    header = make_header(TOKENIZER_MAGIC, TOKENIZER_VERSION, [n, eot_id])
    write_file_atomic(path, header, [np.frombuffer(body, dtype=np.uint8)])


def read_tokenizer_file(path):
    """Read llm.c's tokenizer file: (list of bytes per token id, eot_id).

    Accepts and refuses exactly the files llmc/tokenizer.h tokenizer_init does:
    magic 20240328, version 1 (no EOT slot: 50256) or 2, 1 <= n <= 65536 with
    room in the file for n tokens of at least 2 bytes (checked before the body
    is read), 0 <= EOT < n, every token 1..255 bytes, nothing after token n-1.
    """
    fix = "Re-create it with prepro_tinystories.py (or check the path)."
    header, size = read_header(path, "tokenizer", TOKENIZER_MAGIC, None, TokenizerError, fix)
    version, n = int(header[1]), int(header[2])
    if version not in (1, 2):
        raise TokenizerError(f"tokenizer file {path} has version {version}, expected 1 or 2. {fix}")
    body_size = size - HEADER_BYTES
    if not 1 <= n <= TOKENIZER_MAX_VOCAB:
        raise TokenizerError(f"tokenizer file {path} has vocab size {n}, expected 1 to "
                             f"{TOKENIZER_MAX_VOCAB}. {fix}")
    if 2 * n > body_size:
        raise TokenizerError(f"tokenizer file {path} is truncated: its header says {n} tokens, "
                             f"which take at least {2 * n} bytes after the header, but the file "
                             f"has {body_size}. {fix}")
    eot = int(header[3]) if version == 2 else TOKENIZER_V1_EOT
    if not 0 <= eot < n:
        v1 = "" if version == 2 else f" (version 1 files imply {TOKENIZER_V1_EOT})"
        raise TokenizerError(f"tokenizer file {path} has end-of-text id {eot}{v1}, outside its "
                             f"vocabulary [0, {n}). {fix}")
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        body = f.read(body_size)
    tokens, pos = [], 0
    for i in range(n):
        if pos >= len(body):
            raise TokenizerError(f"tokenizer file {path} is truncated: it ends at token {i} of "
                                 f"{n}. {fix}")
        length = body[pos]
        if length == 0:
            raise TokenizerError(f"tokenizer file {path}: token {i} has length 0 (at byte "
                                 f"{HEADER_BYTES + pos}); every token has 1 to 255 bytes. {fix}")
        if pos + 1 + length > len(body):
            raise TokenizerError(f"tokenizer file {path} is truncated inside token {i} of {n}. {fix}")
        tokens.append(body[pos + 1:pos + 1 + length])
        pos += 1 + length
    if pos != len(body):
        raise TokenizerError(f"tokenizer file {path} is too long: {len(body) - pos} bytes after "
                             f"the last of its {n} tokens. {fix}")
    return tokens, eot
