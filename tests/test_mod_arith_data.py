"""dev/mod_arith.py: the modular-arithmetic example shards (addition, subtraction, division mod 97).

Checks, on the files `python -m dev.mod_arith` writes (read back with dev.shards and
dev.tokenizer): exact counts (4704 train + 4705 val of 9409 at fraction 0.5,
floor(f * 9409) train for f = 0.3 and 0.7); the two splits are disjoint and
together hold every pair (a, b) exactly once; every example is
[a, 97, b, 98, (a+b) % 97, 99, 100, 100] with the loss mask 1 only at
position 4; the header's V bound is 101; the same seed gives identical bytes
and another seed a different split; the tokenizer file has the 101 strings
and EOT 99; bad --train-fraction exits 1 with a message; the experiment's
experiments/00010-delayed-generalization/prepare_data.py (run as dev/run.py runs
a "prepare" command: PYTHONPATH = the repository) writes the same bytes. The other tasks:
every sub example's answer is (a - b) % 97 and every div example's answer c satisfies
c * b % 97 == a, with b = 0 absent (9312 pairs), computed here with Python's own pow(b, -1, p);
div on a composite modulus is refused. The mirror shards partition val.bin exactly by whether
(b, a) is in train.bin (29% in at fraction 0.3, the share the 00010 audit counted), and
--split unordered puts both orders of every pair on the same side (no mirror shards then).
Run: python -m pytest -q tests/test_mod_arith_data.py
"""

import math

import numpy as np
import pytest

from dev.shards import read_example_shard
from dev.tokenizer import read_tokenizer_file
from helpers import REPO

MODULE = "dev.mod_arith"
EXPERIMENT_SCRIPT = "experiments/00010-delayed-generalization/prepare_data.py"
P = 97


def prepare(run_cli, out_dir, *args):
    r = run_cli(MODULE, "--out-dir", out_dir, *args)
    assert r.returncode == 0, r.stderr
    train = read_example_shard(out_dir / "train.bin")
    val = read_example_shard(out_dir / "val.bin")
    return train, val, r.stdout


def pair_index(tokens):
    return tokens[:, 0].astype(np.int64) * P + tokens[:, 2].astype(np.int64)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_counts_split_and_examples(run_cli, tmp_path, fraction):
    (tr_tok, tr_mask, tr_v), (va_tok, va_mask, va_v), out = prepare(
        run_cli, tmp_path, "--train-fraction", fraction, "--seed", 3)
    n_train = math.floor(fraction * P * P)
    assert len(tr_tok) == n_train and len(va_tok) == P * P - n_train, (len(tr_tok), len(va_tok))
    assert f"train: {n_train} examples" in out
    if fraction == 0.5:
        assert (len(tr_tok), len(va_tok)) == (4704, 4705)
    assert tr_v == va_v == 101
    tr_i, va_i = pair_index(tr_tok), pair_index(va_tok)
    assert len(np.intersect1d(tr_i, va_i)) == 0, "train and val share pairs"
    both = np.sort(np.concatenate([tr_i, va_i]))
    assert np.array_equal(both, np.arange(P * P)), "the splits do not hold every pair exactly once"
    for tok, mask in ((tr_tok, tr_mask), (va_tok, va_mask)):
        assert tok.shape[1] == 8 and mask.shape == tok.shape
        a, b = tok[:, 0].astype(np.int64), tok[:, 2].astype(np.int64)
        assert a.max() < P and b.max() < P
        expected = np.stack([a, np.full_like(a, 97), b, np.full_like(a, 98), (a + b) % P,
                             np.full_like(a, 99), np.full_like(a, 100), np.full_like(a, 100)], 1)
        bad = np.argwhere(tok != expected)
        assert len(bad) == 0, f"example {bad[0][0]} position {bad[0][1]}: {tok[bad[0][0]]}"
        expected_mask = np.zeros_like(mask)
        expected_mask[:, 4] = 1
        assert np.array_equal(mask, expected_mask), "mask must be 1 only at position 4 (the answer)"


def test_determinism_and_seed(run_cli, tmp_path):
    prepare(run_cli, tmp_path / "a", "--seed", 7)
    prepare(run_cli, tmp_path / "b", "--seed", 7)
    prepare(run_cli, tmp_path / "c", "--seed", 8)
    for name in ("train.bin", "val.bin", "tokenizer.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train.bin").read_bytes() != (tmp_path / "c" / "train.bin").read_bytes()
    # the split is the documented numpy permutation
    perm = np.random.default_rng(7).permutation(P * P)
    tok, _, _ = read_example_shard(tmp_path / "a" / "train.bin")
    assert np.array_equal(pair_index(tok), np.sort(perm[:4704]))


def test_tokenizer_file(run_cli, tmp_path):
    prepare(run_cli, tmp_path)
    tokens, eot = read_tokenizer_file(tmp_path / "tokenizer.bin")
    assert eot == 99
    assert tokens == [str(i).encode() for i in range(97)] + [b"+", b"=", b"<end>", b"<pad>"]


@pytest.mark.parametrize("args, needle", [
    (("--train-fraction", "0"), "--train-fraction 0.0"),
    (("--train-fraction", "1"), "--train-fraction 1.0"),
    (("--modulus", "1"), "--modulus 1"),
    (("--train-fraction", "0.00001"), "leaves 0 training"),
])
def test_bad_arguments(run_cli, tmp_path, args, needle):
    r = run_cli(MODULE, "--out-dir", tmp_path, *args)
    assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_experiment_script_writes_the_same_bytes(run_cli, tmp_path):
    args = ("--train-fraction", 0.3, "--seed", 4, "--modulus", 13)
    r = run_cli(EXPERIMENT_SCRIPT, "--out-dir", tmp_path / "script", *args, env={"PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr
    r = run_cli(MODULE, "--out-dir", tmp_path / "module", *args)
    assert r.returncode == 0, r.stderr
    for name in ("train.bin", "val.bin", "tokenizer.bin"):
        a = (tmp_path / "script" / name).read_bytes()
        assert a == (tmp_path / "module" / name).read_bytes(), name
        assert len(a) > 0, name


def test_sub_and_div_answers(run_cli, tmp_path):
    train, val, _ = prepare(run_cli, tmp_path / "sub", "--task", "sub")
    for tokens, *_ in (train, val):
        a, b, c = (tokens[:, i].astype(np.int64) for i in (0, 2, 4))
        assert np.all(c == (a - b) % P) and np.all(tokens[:, 1] == P)
    train, val, out = prepare(run_cli, tmp_path / "div", "--task", "div")
    assert len(train[0]) + len(val[0]) == P * (P - 1), "every pair with b != 0, once"
    for tokens, *_ in (train, val):
        a, b, c = (tokens[:, i].astype(np.int64) for i in (0, 2, 4))
        assert np.all(b != 0)
        assert all(int(ci) == int(ai) * pow(int(bi), -1, P) % P for ai, bi, ci in zip(a, b, c))
    strings, _ = read_tokenizer_file(tmp_path / "div" / "tokenizer.bin")
    assert strings[P] == b"/"
    r = run_cli(MODULE, "--out-dir", tmp_path / "bad", "--task", "div", "--modulus", "12")
    assert r.returncode == 1 and "prime" in r.stderr and "Traceback" not in r.stderr


def test_mirror_shards_and_unordered_split(run_cli, tmp_path):
    train, val, out = prepare(run_cli, tmp_path / "pairs", "--train-fraction", 0.3)
    in_train = set(pair_index(train[0]).tolist())
    a, b = val[0][:, 0].astype(np.int64), val[0][:, 2].astype(np.int64)
    mirrored = np.array([int(y) * P + int(x) in in_train for x, y in zip(a, b)])
    got_in = read_example_shard(tmp_path / "pairs" / "val_mirror_in_train.bin")[0]
    got_out = read_example_shard(tmp_path / "pairs" / "val_mirror_not_in_train.bin")[0]
    assert np.array_equal(got_in, val[0][mirrored]) and np.array_equal(got_out, val[0][~mirrored])
    assert 0.27 < mirrored.mean() < 0.31, mirrored.mean()  # about the training fraction
    train, val, _ = prepare(run_cli, tmp_path / "unordered", "--split", "unordered")
    assert len(train[0]) + len(val[0]) == P * P
    tr = set(pair_index(train[0]).tolist())
    for tokens in (train[0], val[0]):
        for x, y in zip(tokens[:, 0].astype(int), tokens[:, 2].astype(int)):
            assert ((x * P + y) in tr) == ((y * P + x) in tr), "both orders on one side"
    assert abs(len(train[0]) - P * P // 2) <= 2  # the last unordered pair may carry two examples
    assert not (tmp_path / "unordered" / "val_mirror_in_train.bin").exists()
