"""Token shards (llm.c v1) and example shards (ours): readers and writers.

Token shard: 256-int32 header [0] 20240520, [1] 1, [2] N; then N uint16 tokens;
exactly 1024 + 2N bytes.

Example shard: header [0] 20261122, [1] 1, [2] N examples, [3] E tokens per
example, [4] V bound (every token < V); then N*E uint16 tokens, then N*E uint8
loss-mask bytes; exactly 1024 + 3*N*E bytes; E is at most maxT's bound + 1
(2^20 + 1, llmc/dataloader.h). Mask byte j of an example is 1
when token j is a scored target (predicted from position j-1), so byte 0 is
always 0; every mask byte is 0 or 1. Readers check all of this and raise
ShardError (a UserError) naming the file, what was found and what was expected.
Writers are atomic and raise ValueError on bad arrays (a programming error).
"""

import numpy as np

from dev.binheader import HEADER_BYTES, check_size, make_header, read_header, write_file_atomic
from dev.checkpoint import MAX_SEQ_LEN
from dev.errors import UserError

TOKEN_SHARD_MAGIC = 20240520
TOKEN_SHARD_VERSION = 1
EXAMPLE_SHARD_MAGIC = 20261122
EXAMPLE_SHARD_VERSION = 1
MAX_TOKEN = 65535  # uint16

TOKEN_FIX = "Re-create it with prepro_tinystories.py (or check the path)."
EXAMPLE_FIX = "Re-create it with the script that wrote it (or check the path)."


class ShardError(UserError):
    """A token or example shard is missing, malformed or inconsistent."""


def _as_tokens(tokens, what):
    arr = np.asarray(tokens)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > MAX_TOKEN):
        raise ValueError(f"{what}: token ids must be in [0, {MAX_TOKEN}], found "
                         f"[{arr.min()}, {arr.max()}]")
    return arr.astype("<u2")


def write_token_shard(path, tokens):
    """Atomically write a 1-D sequence of token ids (each 0..65535) as a token shard."""
    arr = _as_tokens(tokens, f"write_token_shard({path})").reshape(-1)
    write_file_atomic(path, make_header(TOKEN_SHARD_MAGIC, TOKEN_SHARD_VERSION, [arr.size]), [arr])


def read_token_shard(path):
    """Read a token shard: np.uint16 array (N,)."""
    header, size = read_header(path, "token shard", TOKEN_SHARD_MAGIC, TOKEN_SHARD_VERSION,
                               ShardError, TOKEN_FIX)
    n = int(header[2])
    if n < 0:
        raise ShardError(f"token shard {path} has token count {n} in its header, "
                         f"expected >= 0. {TOKEN_FIX}")
    check_size(path, "token shard", size, HEADER_BYTES + 2 * n,
               f"1024-byte header + 2 * {n} tokens", ShardError, TOKEN_FIX)
    return np.fromfile(path, dtype="<u2", offset=HEADER_BYTES, count=n)


def write_example_shard(path, tokens, mask, vocab_size):
    """Atomically write fixed-length examples: tokens (N, E) ints < vocab_size, mask (N, E) 0/1."""
    where = f"write_example_shard({path})"
    tok = _as_tokens(tokens, where)
    m = np.asarray(mask)
    if tok.ndim != 2 or m.shape != tok.shape:
        raise ValueError(f"{where}: tokens {tok.shape} and mask {m.shape} must both be (N, E)")
    N, E = tok.shape
    if N < 1 or E < 2:
        raise ValueError(f"{where}: need N >= 1 examples of E >= 2 tokens, got N={N} E={E}")
    if not (1 <= int(vocab_size) <= MAX_TOKEN + 1):
        raise ValueError(f"{where}: vocab_size {vocab_size} must be in [1, {MAX_TOKEN + 1}]")
    if tok.max() >= vocab_size:
        raise ValueError(f"{where}: token {int(tok.max())} >= vocab_size {vocab_size}")
    if not np.all((m == 0) | (m == 1)):
        raise ValueError(f"{where}: mask values must be 0 or 1")
    if np.any(m[:, 0] != 0):
        raise ValueError(f"{where}: mask column 0 must be 0 (token 0 is never a target)")
    header = make_header(EXAMPLE_SHARD_MAGIC, EXAMPLE_SHARD_VERSION, [N, E, int(vocab_size)])
    write_file_atomic(path, header, [tok, m.astype("u1")])


def read_example_shard(path):
    """Read an example shard: (tokens (N, E) uint16, mask (N, E) uint8, vocab_bound int)."""
    header, size = read_header(path, "example shard", EXAMPLE_SHARD_MAGIC, EXAMPLE_SHARD_VERSION,
                               ShardError, EXAMPLE_FIX)
    N, E, V = (int(x) for x in header[2:5])
    if N < 1 or not 2 <= E <= MAX_SEQ_LEN + 1 or not (1 <= V <= MAX_TOKEN + 1):
        raise ShardError(
            f"example shard {path} has inconsistent header N={N} E={E} V={V}, expected "
            f"N >= 1, 2 <= E <= {MAX_SEQ_LEN + 1}, 1 <= V <= {MAX_TOKEN + 1}. {EXAMPLE_FIX}")
    check_size(path, "example shard", size, HEADER_BYTES + 3 * N * E,
               f"1024-byte header + 3 * N*E with N={N} E={E}", ShardError, EXAMPLE_FIX)
    tokens = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES, count=N * E).reshape(N, E)
    mask = np.fromfile(path, dtype="u1", offset=HEADER_BYTES + 2 * N * E, count=N * E).reshape(N, E)
    if tokens.max() >= V:
        i = int(np.argmax(tokens.reshape(-1) >= V))
        raise ShardError(
            f"example shard {path}: token {int(tokens.reshape(-1)[i])} at example {i // E} "
            f"position {i % E} is >= the header's V bound {V}. {EXAMPLE_FIX}")
    if mask.max() > 1:
        i = int(np.argmax(mask.reshape(-1) > 1))
        raise ShardError(
            f"example shard {path}: mask byte {int(mask.reshape(-1)[i])} at example {i // E} "
            f"position {i % E}, expected 0 or 1. {EXAMPLE_FIX}")
    if np.any(mask[:, 0] != 0):
        i = int(np.argmax(mask[:, 0] != 0))
        raise ShardError(
            f"example shard {path}: example {i} has mask byte 0 set, expected 0 "
            f"(token 0 is never a target). {EXAMPLE_FIX}")
    return tokens, mask, V
