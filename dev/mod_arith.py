"""Addition mod p (default p = 97) as example shards: the data of the delayed-generalization
(grokking) experiment, experiments/00010-delayed-generalization.

Contract: `python -m dev.mod_arith --out-dir data/mod97` writes, in --out-dir:
  train.bin, val.bin   example shards (README "File formats"), E = 8 tokens each
  tokenizer.bin        llm.c v2 tokenizer file: "0".."p-1", "+", "=", "<end>", "<pad>"

Tokens: 0..p-1 are the numbers, p is '+', p+1 is '=', p+2 is end (the EOT id),
p+3 is padding; the vocabulary has V = p + 4 tokens (101 for p = 97). The
example for the pair (a, b) is
    [a, +, b, =, c, <end>, <pad>, <pad>]     with c = (a + b) mod p,
and its loss mask is 1 only at position 4 (token c, predicted from the '=' at
position 3): the model is scored on the answer alone.

Split: all p*p pairs, indexed i = a*p + b, are permuted by
np.random.default_rng(--seed).permutation(p*p); the first
floor(--train-fraction * p*p) indices of the permutation are the training set,
the rest validation. Each shard lists its examples in ascending pair index, so
the same arguments always give the same bytes. Prints the counts.
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


def special_tokens(p):
    """Ids of the four non-number tokens for modulus p: (plus, equals, end, pad)."""
    return p, p + 1, p + 2, p + 3


def vocab_size(p):
    return p + 4


def token_strings(p):
    """The V = p + 4 token texts in id order."""
    return [str(i) for i in range(p)] + ["+", "=", "<end>", "<pad>"]


def all_examples(p):
    """tokens (p*p, E) int64 and mask (p*p, E) uint8 for every pair (a, b), row i = a*p + b."""
    plus, equals, end, pad = special_tokens(p)
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    tokens = np.empty((p * p, E), dtype=np.int64)
    tokens[:, 0] = a
    tokens[:, 1] = plus
    tokens[:, 2] = b
    tokens[:, 3] = equals
    tokens[:, 4] = (a + b) % p
    tokens[:, 5] = end
    tokens[:, 6:] = pad
    mask = np.zeros((p * p, E), dtype=np.uint8)
    mask[:, ANSWER_POS] = 1
    return tokens, mask


def split_indices(p, train_fraction, seed):
    """(train, val): sorted pair indices; train has floor(train_fraction * p*p) of them."""
    n = p * p
    n_train = int(np.floor(train_fraction * n))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Write addition-mod-p example shards (train.bin, val.bin) and a tokenizer file.")
    p.add_argument("--out-dir", default="data/mod97",
                   help="folder for train.bin, val.bin and tokenizer.bin (default: data/mod97)")
    p.add_argument("--train-fraction", type=float, default=0.5,
                   help="fraction of all p*p pairs used for training; the rest is validation "
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
    if not (0.0 < args.train_fraction < 1.0):
        raise UserError(f"--train-fraction {args.train_fraction} must be strictly between 0 and 1 "
                        f"(for example 0.5).")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} must be >= 0.")
    train_idx, val_idx = split_indices(p, args.train_fraction, args.seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise UserError(f"--train-fraction {args.train_fraction} leaves {len(train_idx)} training "
                        f"and {len(val_idx)} validation examples of {p * p}; both must be >= 1.")
    V = vocab_size(p)
    print(f"addition mod {p}: V={V} E={E} train_fraction={args.train_fraction} seed={args.seed}")
    tokens, mask = all_examples(p)
    os.makedirs(args.out_dir, exist_ok=True)
    outputs = []
    for name, idx in (("train", train_idx), ("val", val_idx)):
        path = os.path.join(args.out_dir, f"{name}.bin")
        write_example_shard(path, tokens[idx], mask[idx], V)
        outputs.append(path)
        print(f"{name}: {len(idx)} examples -> {path}")
    tok_path = os.path.join(args.out_dir, "tokenizer.bin")
    write_tokenizer_file(tok_path, token_strings(p), eot_id=special_tokens(p)[2])
    print(f"tokenizer: {V} tokens, EOT {special_tokens(p)[2]} -> {tok_path}")
    print(f"total: {p * p} pairs = {len(train_idx)} train + {len(val_idx)} val")
    return 0


if __name__ == "__main__":
    cli_main(main)
