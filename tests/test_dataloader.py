"""Data plumbing of llmc/dataloader.h, on shards whose right batches are known in closed form.

What it checks, through tests/dataloader_probe.c (which calls the loader exactly as the trainers
do and writes every batch to a file):
  - Token shards whose every token equals its global position (shards of 1024, 1537 and 650
    tokens): every validation batch is the exact window, in order, shard after shard; every
    training batch is an exact window of B*T+1 tokens inside one shard (never across a
    boundary); each epoch visits every window exactly once; the order is shuffled (shards and
    windows) and differs between epochs and between seeds, but is the same for the same seed;
    seeking to (epoch, cursor), as --resume does, continues with exactly the same batches.
  - Example shards whose tokens encode (example, position): every row is one whole example
    (inputs = tokens 0..E-2, targets = 1..E-1, mask = mask bytes 1..E-1); training visits
    floor(N/B) batches per shard and epoch with distinct examples; validation visits every
    example once in order, the last batch of a shard padded with empty rows (num_rows < B).
  - A 2.15 GB token shard (sparse file): the window past the 2 GiB mark is read exactly.
Run: python -m pytest -q tests/test_dataloader.py   (compiles the probe with gcc)
"""

import os
import subprocess

import numpy as np
import pytest

from dev.shards import write_example_shard, write_token_shard
from helpers import REPO

TOKEN_SHARDS = (1024, 1537, 650)  # 1024 = 32 * 32: a shard that is one token short of 32 windows of B*T=32; 1537 = 48 * 32 + 1: exactly 48 windows
B, T = 2, 16


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    exe = tmp_path_factory.mktemp("probe") / "dataloader_probe"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
                        "-I", REPO, os.path.join(REPO, "tests/dataloader_probe.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"building the probe failed:\n{r.stderr}"
    return exe


def run_probe(probe, tmp_path, pattern, b, t, shuffle, seed, nbatches, seek=None, V=65536):
    out = tmp_path / f"batches_{shuffle}_{seed}_{nbatches}_{seek}.bin"
    args = [str(probe), str(pattern), str(b), str(t), str(V), str(shuffle), str(seed), str(nbatches), str(out)]
    if seek:
        args += [str(seek[0]), str(seek[1])]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"probe failed: {r.stderr}"
    raw = out.read_bytes()
    head = np.frombuffer(raw[:48], dtype="<i8")
    b, t, kind, n, per_epoch, shards = (int(x) for x in head)
    rec = 5 * 8 + 3 * b * t * 4
    batches = []
    for k in range(n):
        chunk = raw[48 + k * rec: 48 + (k + 1) * rec]
        meta = np.frombuffer(chunk[:40], dtype="<i8")
        data = np.frombuffer(chunk[40:], dtype="<i4").reshape(3, b, t)
        batches.append(dict(epoch=int(meta[0]), cursor=int(meta[1]), shard=int(meta[2]), unit=int(meta[3]),
                            rows=int(meta[4]), inputs=data[0], targets=data[1], mask=data[2]))
    return dict(kind=kind, per_epoch=per_epoch, shards=shards, batches=batches)


@pytest.fixture
def position_shards(tmp_path):
    """Token shards where token = global position; returns (glob, shard bases)."""
    bases, start = [], 0
    for i, n in enumerate(TOKEN_SHARDS):
        write_token_shard(tmp_path / f"pos_{i:03d}.bin", np.arange(start, start + n))
        bases.append(start)
        start += n
    return tmp_path / "pos_*.bin", bases


def windows_per_shard(b, t):
    return [(n - 1) // (b * t) for n in TOKEN_SHARDS]


def expected_window(bases, shard, w, b, t):
    start = bases[shard] + w * b * t
    inputs = (start + np.arange(b * t)).reshape(b, t)
    return inputs, inputs + 1


def test_validation_batches_are_the_exact_windows_in_order(probe, tmp_path, position_shards):
    pattern, bases = position_shards
    per_shard = windows_per_shard(B, T)
    total = sum(per_shard)
    got = run_probe(probe, tmp_path, pattern, B, T, shuffle=0, seed=0, nbatches=total + 3)
    assert got["kind"] == 1 and got["per_epoch"] == total and got["shards"] == 3
    expected = [(s, w) for s in range(3) for w in range(per_shard[s])]
    expected += expected[:3]  # the next epoch starts over
    for k, (batch, (s, w)) in enumerate(zip(got["batches"], expected)):
        inputs, targets = expected_window(bases, s, w, B, T)
        assert (batch["shard"], batch["unit"]) == (s, w), f"val batch {k}"
        assert np.array_equal(batch["inputs"], inputs), f"val batch {k}: inputs are not window {w} of shard {s}"
        assert np.array_equal(batch["targets"], targets), f"val batch {k}: targets are not inputs + 1"
        assert batch["rows"] == B and np.all(batch["mask"] == 1)


def check_train_batch(batch, bases, k, b=B, t=T):
    s, w = batch["shard"], batch["unit"]
    inputs, targets = expected_window(bases, s, w, b, t)
    assert np.array_equal(batch["inputs"], inputs), f"train batch {k}: not the window {w} of shard {s}"
    assert np.array_equal(batch["targets"], targets), f"train batch {k}: targets are not inputs + 1"
    last = int(targets[-1, -1])
    assert last < bases[s] + TOKEN_SHARDS[s], f"train batch {k} runs past the end of shard {s}"


def train_epochs(got, per_epoch):
    return [got["batches"][e * per_epoch:(e + 1) * per_epoch] for e in range(len(got["batches"]) // per_epoch)]


def test_training_batches_cover_every_window_once_per_epoch_shuffled(probe, tmp_path, position_shards):
    pattern, bases = position_shards
    per_shard = windows_per_shard(B, T)
    total = sum(per_shard)
    got = run_probe(probe, tmp_path, pattern, B, T, shuffle=1, seed=7, nbatches=4 * total)
    everything = {(s, w) for s in range(3) for w in range(per_shard[s])}
    orders = []
    for e, epoch in enumerate(train_epochs(got, total)):
        for k, batch in enumerate(epoch):
            check_train_batch(batch, bases, e * total + k)
            assert (batch["epoch"], batch["cursor"]) == (e, k + 1)
        visited = [(b["shard"], b["unit"]) for b in epoch]
        assert len(set(visited)) == total and set(visited) == everything, f"epoch {e} misses or repeats windows"
        # a shard's windows are consecutive (shards are shuffled as units), windows inside are shuffled
        shard_runs = [s for i, (s, _) in enumerate(visited) if i == 0 or visited[i - 1][0] != s]
        assert sorted(shard_runs) == [0, 1, 2], f"epoch {e}: shards are not visited one after another"
        for s in range(3):
            ws = [w for (sh, w) in visited if sh == s]
            assert ws != sorted(ws), f"epoch {e}: windows of shard {s} are not shuffled"
        orders.append(visited)
    assert len({tuple(o) for o in orders}) == len(orders), "every epoch must have a new order"
    assert len({tuple(dict.fromkeys(s for s, _ in o)) for o in orders}) > 1, "the shard order never changes"
    # same seed: same batches; another seed: another order
    again = run_probe(probe, tmp_path, pattern, B, T, shuffle=1, seed=7, nbatches=total)
    assert [(b["shard"], b["unit"]) for b in again["batches"]] == orders[0]
    other = run_probe(probe, tmp_path, pattern, B, T, shuffle=1, seed=8, nbatches=total)
    assert [(b["shard"], b["unit"]) for b in other["batches"]] != orders[0]


def test_seek_continues_with_the_same_batches(probe, tmp_path, position_shards):
    pattern, bases = position_shards
    total = sum(windows_per_shard(B, T))
    full = run_probe(probe, tmp_path, pattern, B, T, shuffle=1, seed=3, nbatches=2 * total + 5)
    for epoch, cursor in ((0, 0), (0, 37), (1, 0), (1, total - 1), (1, total)):
        start = epoch * total + cursor
        part = run_probe(probe, tmp_path, pattern, B, T, shuffle=1, seed=3, nbatches=5, seek=(epoch, cursor))
        for k, (a, b) in enumerate(zip(part["batches"], full["batches"][start:start + 5])):
            assert (a["shard"], a["unit"], a["epoch"], a["cursor"]) == (b["shard"], b["unit"], b["epoch"], b["cursor"]), \
                f"after seek({epoch}, {cursor}) batch {k} differs"
            assert np.array_equal(a["inputs"], b["inputs"])


def test_a_bigger_batch_changes_the_window_size(probe, tmp_path, position_shards):
    pattern, bases = position_shards
    b, t = 3, 40
    total = sum((n - 1) // (b * t) for n in TOKEN_SHARDS)
    got = run_probe(probe, tmp_path, pattern, b, t, shuffle=1, seed=1, nbatches=total)
    for k, batch in enumerate(got["batches"]):
        check_train_batch(batch, bases, k, b, t)


# ---- example shards ---------------------------------------------------------------------

E = 6
EXAMPLES = (23, 17)


def example_tokens(g):
    return g * E + np.arange(E)


def example_mask(g):
    m = np.zeros(E, dtype=np.uint8)
    m[[3, 5] if g % 2 == 0 else [4]] = 1
    return m


@pytest.fixture
def example_shards(tmp_path):
    g0 = 0
    for i, n in enumerate(EXAMPLES):
        gs = range(g0, g0 + n)
        write_example_shard(tmp_path / f"ex_{i}.bin", np.stack([example_tokens(g) for g in gs]),
                            np.stack([example_mask(g) for g in gs]), 65536)
        g0 += n
    return tmp_path / "ex_*.bin"


def row_example(inputs_row):
    g = int(inputs_row[0]) // E
    return g


def check_example_row(batch, r, k):
    g = row_example(batch["inputs"][r])
    tok, m = example_tokens(g), example_mask(g)
    assert np.array_equal(batch["inputs"][r], tok[:-1]), f"batch {k} row {r}: inputs are not example {g}"
    assert np.array_equal(batch["targets"][r], tok[1:]), f"batch {k} row {r}: targets are not example {g} shifted"
    assert np.array_equal(batch["mask"][r], m[1:]), f"batch {k} row {r}: mask is not example {g}'s bytes 1..E-1"
    return g


def test_example_training_batches(probe, tmp_path, example_shards):
    b = 4
    per_epoch = sum(n // b for n in EXAMPLES)
    got = run_probe(probe, tmp_path, example_shards, b, 0, shuffle=1, seed=5, nbatches=2 * per_epoch)
    assert got["kind"] == 2 and got["per_epoch"] == per_epoch
    seen_orders = []
    for e, epoch in enumerate(train_epochs(got, per_epoch)):
        seen = []
        for k, batch in enumerate(epoch):
            assert batch["rows"] == b
            gs = [check_example_row(batch, r, k) for r in range(b)]
            first = 0 if batch["shard"] == 0 else EXAMPLES[0]
            assert all(first <= g < first + EXAMPLES[batch["shard"]] for g in gs), "a batch mixes shards"
            seen += gs
        assert len(seen) == len(set(seen)) == per_epoch * b, f"epoch {e} repeats an example"
        seen_orders.append(seen)
    assert seen_orders[0] != seen_orders[1], "examples are reshuffled every epoch"


def test_example_validation_batches_cover_every_example_in_order(probe, tmp_path, example_shards):
    b = 4
    per_epoch = sum(-(-n // b) for n in EXAMPLES)
    got = run_probe(probe, tmp_path, example_shards, b, 0, shuffle=0, seed=0, nbatches=per_epoch)
    assert got["per_epoch"] == per_epoch
    seen = []
    for k, batch in enumerate(got["batches"]):
        for r in range(batch["rows"]):
            seen.append(check_example_row(batch, r, k))
        for r in range(batch["rows"], b):  # padding rows of a partial batch
            assert np.all(batch["mask"][r] == 0) and np.all(batch["inputs"][r] == 0), f"batch {k} row {r}"
    assert seen == list(range(sum(EXAMPLES))), "validation must visit every example once, in file order"
    partial = [batch["rows"] for batch in got["batches"] if batch["rows"] < b]
    assert partial == [EXAMPLES[0] % b, EXAMPLES[1] % b]


def test_shard_over_2gb(probe, tmp_path):
    """A token shard of 2.15 GB (sparse zeros, a known tail): the last window, whose byte offset is
    past 2^31, is read exactly (offsets are size_t/off_t, not int). Takes a few seconds: the loader
    scans every token once at start."""
    N = 1_074_000_000  # 1024 + 2N = 2,148,001,024 bytes > 2^31
    tail = (np.arange(200_000) * 7 % 65521).astype("<u2")
    path = tmp_path / "big.bin"
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, N)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.truncate(1024 + 2 * N)
        f.seek(1024 + 2 * (N - tail.size))
        f.write(tail.tobytes())
    try:
        b, t = 1, 1024
        windows = (N - 1) // (b * t)
        got = run_probe(probe, tmp_path, path, b, t, shuffle=0, seed=0, nbatches=1, seek=(0, windows - 1))
        batch = got["batches"][0]
        start = (windows - 1) * b * t
        assert 1024 + 2 * start > 2**31, "the window must start past the 2 GiB mark"
        want = tail[start - (N - tail.size):][:b * t + 1].astype(np.int64)
        assert batch["unit"] == windows - 1
        assert np.array_equal(batch["inputs"].reshape(-1), want[:-1]), "inputs of the last window"
        assert np.array_equal(batch["targets"].reshape(-1), want[1:]), "targets of the last window"
    finally:
        path.unlink()
