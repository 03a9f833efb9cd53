"""Modular arithmetic (default p = 97) as example shards: the data of the delayed-generalization
(grokking) experiment, experiments/00010-delayed-generalization.

Contract: `python -m dev.mod_arith --out-dir data/mod97` writes, in --out-dir:
  train.bin, val.bin   example shards (README "File formats"), E = 8 tokens each
  val_mirror_in_train.bin, val_mirror_not_in_train.bin
                       the validation examples split by whether the mirrored pair (b, a) is in
                       the training set (skipped when one of them would be empty, as with
                       --split unordered, where no mirror is ever in training)
  tokenizer.bin        llm.c v2 tokenizer file: "0".."p-1", the operator, "=", "<end>", "<pad>"

Tasks (--task): add c = (a + b) mod p over all p*p pairs (the default); sub c = (a - b) mod p;
div c = a * b^-1 mod p over the p*(p-1) pairs with b != 0 (p must be prime), Power et al.'s
x/y, whose Figure 1 is the anchor of experiment 00010.
Tokens: 0..p-1 are the numbers, p the operator ('+', '-' or '/'), p+1 '=', p+2 end (the EOT
id), p+3 padding; V = p + 4 tokens (101 for p = 97) for every task. The example for (a, b) is
    [a, op, b, =, c, <end>, <pad>, <pad>]
and its loss mask is 1 only at position 4 (token c, predicted from the '=' at position 3): the
model is scored on the answer alone.

Split: the task's pairs, in ascending index i = a*p + b, are permuted by
np.random.default_rng(--seed).permutation; the first floor(--train-fraction * n) of them are the
training set, the rest validation (--split pairs, the default, as in Power et al.: (a, b) and
(b, a) fall independently). --split unordered permutes the unordered pairs {a, b} instead (a
pair whose mirror is not in the task, b = 0 for div, counts alone) and puts both orders on the
same side, so no validation example has its mirror in training; the training set then has the
first unordered pairs holding floor(--train-fraction * n) examples. Each shard lists its
examples in ascending pair index, so the same arguments always give the same bytes. Prints the
counts, including how many validation examples have their mirror in training.
experiments/00010-delayed-generalization/prepare_data.py is the same command (it calls main).
Bad arguments: `error: ...` and exit 1.
"""

import argparse
import os

import numpy as np

from dev.errors import UserError, cli_main
from dev.shards import write_example_shard
from dev.tokenizer import write_tokenizer_file

E = 8            # tokens per example
ANSWER_POS = 4   # mask byte 4: the answer c is the only scored target


TASKS = {"add": "+", "sub": "-", "div": "/"}
SPLITS = ("pairs", "unordered")


def special_tokens(p):
    """Ids of the four non-number tokens for modulus p: (operator, equals, end, pad)."""
    return p, p + 1, p + 2, p + 3


def vocab_size(p):
    return p + 4


def token_strings(p, task="add"):
    """The V = p + 4 token texts in id order."""
    return [str(i) for i in range(p)] + [TASKS[task], "=", "<end>", "<pad>"]


def is_prime(p):
    return p >= 2 and all(p % d for d in range(2, int(p ** 0.5) + 1))


def task_pairs(p, task="add"):
    """(a, b, c) int64 arrays of the task's pairs in ascending a*p + b, c the answer."""
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    if task == "add":
        c = (a + b) % p
    elif task == "sub":
        c = (a - b) % p
    elif task == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        inverse = np.array([0] + [pow(int(x), p - 2, p) for x in range(1, p)], dtype=np.int64)  # Fermat
        c = (a * inverse[b]) % p
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return a, b, c


def all_examples(p, task="add"):
    """tokens (n, E) int64 and mask (n, E) uint8 for every pair of the task, in ascending a*p + b."""
    op, equals, end, pad = special_tokens(p)
    a, b, c = task_pairs(p, task)
    tokens = np.empty((len(a), E), dtype=np.int64)
    tokens[:, 0] = a
    tokens[:, 1] = op
    tokens[:, 2] = b
    tokens[:, 3] = equals
    tokens[:, 4] = c
    tokens[:, 5] = end
    tokens[:, 6:] = pad
    mask = np.zeros((len(a), E), dtype=np.uint8)
    mask[:, ANSWER_POS] = 1
    return tokens, mask


def split_indices(p, train_fraction, seed, task="add", split="pairs"):
    """(train, val): sorted row indices into all_examples(p, task); train holds
    floor(train_fraction * n) examples (see the module doc for the two split modes)."""
    a, b, _ = task_pairs(p, task)
    n = len(a)
    n_train = int(np.floor(train_fraction * n))
    rng = np.random.default_rng(seed)
    if split == "pairs":
        perm = rng.permutation(n)
        return np.sort(perm[:n_train]), np.sort(perm[n_train:])
    if split != "unordered":
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    key = np.minimum(a, b) * p + np.maximum(a, b)          # the unordered pair of each row
    groups, group_of = np.unique(key, return_inverse=True)
    order = rng.permutation(len(groups))
    sizes = np.bincount(group_of, minlength=len(groups))[order]
    take = order[:int(np.searchsorted(np.cumsum(sizes), n_train, side="right"))]
    in_train = np.isin(group_of, take)
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def mirror_in_train(p, train_idx, val_idx, task="add"):
    """For each validation row, whether the example of the mirrored pair (b, a) is in training."""
    a, b, _ = task_pairs(p, task)
    train_keys = set((a[train_idx] * p + b[train_idx]).tolist())
    return np.array([int(b[i]) * p + int(a[i]) in train_keys for i in val_idx], dtype=bool)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Write modular-arithmetic example shards (train.bin, val.bin, the validation split by "
                    "mirror) and a tokenizer file.")
    p.add_argument("--out-dir", default="data/mod97",
                   help="folder for the shards and tokenizer.bin (default: data/mod97)")
    p.add_argument("--task", choices=list(TASKS), default="add",
                   help="add: (a + b) mod p; sub: (a - b) mod p; div: a / b mod p with b != 0 "
                        "(p prime) (default: add)")
    p.add_argument("--split", choices=SPLITS, default="pairs",
                   help="pairs: (a, b) and (b, a) fall independently; unordered: both orders of a pair "
                        "on the same side (default: pairs)")
    p.add_argument("--train-fraction", type=float, default=0.5,
                   help="fraction of the task's pairs used for training; the rest is validation "
                        "(default: 0.5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the numpy Generator permutation that picks the split (default: 0)")
    p.add_argument("--modulus", type=int, default=97,
                   help="p: numbers are 0..p-1 and the vocabulary has p+4 tokens (default: 97)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    p = args.modulus
    if not (2 <= p <= 65532):
        raise UserError(f"--modulus {p} is out of range: use 2..65532 (token ids are uint16).")
    if args.task == "div" and not is_prime(p):
        raise UserError(f"--task div needs a prime modulus (every b != 0 must have an inverse); "
                        f"{p} is not prime: use for example 97.")
    if not (0.0 < args.train_fraction < 1.0):
        raise UserError(f"--train-fraction {args.train_fraction} must be strictly between 0 and 1 "
                        f"(for example 0.5).")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be >= 0.")
    train_idx, val_idx = split_indices(p, args.train_fraction, args.seed, args.task, args.split)
    tokens, mask = all_examples(p, args.task)
    n = len(tokens)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise UserError(f"--train-fraction {args.train_fraction} leaves {len(train_idx)} training "
                        f"and {len(val_idx)} validation examples of {n}; both must be >= 1.")
    V = vocab_size(p)
    print(f"{args.task} mod {p}: V={V} E={E} train_fraction={args.train_fraction} split={args.split} "
          f"seed={args.seed}")
    mirrored = mirror_in_train(p, train_idx, val_idx, args.task)
    os.makedirs(args.out_dir, exist_ok=True)
    shards = [("train", train_idx), ("val", val_idx)]
    if mirrored.any() and not mirrored.all():
        shards += [("val_mirror_in_train", val_idx[mirrored]), ("val_mirror_not_in_train", val_idx[~mirrored])]
    for name, idx in shards:
        path = os.path.join(args.out_dir, f"{name}.bin")
        write_example_shard(path, tokens[idx], mask[idx], V)
        print(f"{name}: {len(idx)} examples -> {path}")
    tok_path = os.path.join(args.out_dir, "tokenizer.bin")
    write_tokenizer_file(tok_path, token_strings(p, args.task), eot_id=special_tokens(p)[2])
    print(f"tokenizer: {V} tokens, EOT {special_tokens(p)[2]} -> {tok_path}")
    print(f"total: {n} pairs = {len(train_idx)} train + {len(val_idx)} val; {int(mirrored.sum())} of the "
          f"validation pairs ({100 * mirrored.mean():.1f}%) have their mirror (b, a) in training")
    return 0


if __name__ == "__main__":
    cli_main(main)
