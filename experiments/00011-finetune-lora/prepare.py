"""Token shards of the fine-tuning text: experiments/00011-finetune-lora/data/project_docs.txt.

The text is this project's own documentation (README.md and the READMEs of 00001 and 00010 at
commit a3eddc1, concatenated): technical prose with tables, flags and numbers, far from the
children's stories the base model was trained on. Paragraphs (blocks separated by a blank line)
go to validation when their index is a multiple of 5 and to training otherwise; each split is
the GPT-2 BPE encoding (dev.tokenizer, offline) of its paragraphs joined by blank lines, with the
end-of-text token in front, written as an llm.c token shard (dev.shards).

    python experiments/00011-finetune-lora/prepare.py --out-dir out/00011/docs
"""

import argparse
import os
import sys

from dev.errors import cli_main
from dev.shards import write_token_shard
from dev.tokenizer import get_gpt2_encoding

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = os.path.join(HERE, "data", "project_docs.txt")
VAL_EVERY = 5


def split_paragraphs(text):
    paras = [p.strip("\n") for p in text.split("\n\n") if p.strip()]
    val = [p for i, p in enumerate(paras) if i % VAL_EVERY == 0]
    train = [p for i, p in enumerate(paras) if i % VAL_EVERY != 0]
    return train, val


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    with open(TEXT, encoding="utf-8") as f:
        train, val = split_paragraphs(f.read())
    enc = get_gpt2_encoding(verbose=False)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, paras in (("docs_train.bin", train), ("docs_val.bin", val)):
        ids = [enc.eot_token] + enc.encode_ordinary("\n\n".join(paras))
        write_token_shard(os.path.join(args.out_dir, name), ids)
        print(f"{name}: {len(paras)} paragraphs, {len(ids)} tokens")
    return 0


if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
