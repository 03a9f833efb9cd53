"""Export a model checkpoint as a Hugging Face transformers GPT-2 folder, offline.

Contract: `python -m dev.export_hf out/d4.bin --out-dir out/d4_hf` writes
  config.json, generation_config.json, model.safetensors
      transformers' GPT2LMHeadModel.save_pretrained of dev.model.to_hf(model):
      the V real rows of wte (padded rows dropped), the LM head tied to it (or its own
      lm_head.weight, tie_word_embeddings false, for an untied model), tanh GELU;
  vocab.json, merges.txt, tokenizer.json, tokenizer_config.json
      only for models with GPT-2's vocabulary (V = 50257): the GPT-2 byte-level
      BPE built from the shipped ranks dev/assets/gpt2.tiktoken (no download).
      vocab.json maps each token's bytes, spelled with GPT-2's byte-to-unicode
      table, to its id; merges.txt lists, in rank order, the pair of pieces
      that BPE joins to form each multi-byte token (recovered by running BPE
      on the token's bytes with only the lower-ranked merges allowed).
For any other V the model is exported and the script says plainly that no
tokenizer was exported. Afterwards it reloads the folder with transformers and
checks the logits against the reference model on a random batch (and the
tokenizer against tiktoken), failing if they disagree. The folder is built
beside --out-dir and renamed into place; an existing --out-dir is replaced
only with --force, and never when it is not an export (no config.json) or
holds the current folder or the checkpoint. An --out-dir that is empty, a
file or under a file is refused before the model is loaded; a folder that
cannot be created or written (a read-only place such as /proc, a full disk)
is an `error:` naming it, and leaves nothing behind.
"""

import argparse
import json
import os
import re
import shutil
import sys

from dev.errors import UserError, cli_main
from dev.files import check_output_dir, make_dirs, write_error

GPT2_VOCAB = 50257
GPT2_EOT = 50256
LOGITS_TOL = 1e-4   # fp32, same math: observed differences are ~1e-6
CHECK_TEXTS = ("Hello world", "Once upon a time, there was a little girl named Lily. She's 3!",
               "  spaces\tand\nnewlines <|endoftext|> héllo 😀 1234567")


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (vocab.json spells token bytes with it).

    The 188 bytes that print as themselves (! .. ~, ¡ .. ¬, ® .. ÿ) keep their
    code point; the other 68 bytes get code points 256, 257, ... in byte order.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | \
        set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _bpe_pieces(token, ranks, max_rank):
    """Split `token` (bytes) by BPE using only merges whose result ranks below max_rank."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, best_rank = None, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def gpt2_vocab_and_merges(ranks):
    """(vocab: dict str -> id, merges: list of (str, str) in rank order) from tiktoken ranks.

    ranks: dict bytes -> id (the 50256 BPE tokens; <|endoftext|> is added as 50256).
    """
    b2u = bytes_to_unicode()

    def spell(bs):
        return "".join(b2u[b] for b in bs)

    vocab = {spell(tok): rank for tok, rank in ranks.items()}
    vocab["<|endoftext|>"] = GPT2_EOT
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        pieces = _bpe_pieces(tok, ranks, rank)
        if len(pieces) != 2:
            raise ValueError(f"token {tok!r} (rank {rank}) does not split into exactly two "
                             f"lower-ranked pieces: {pieces}")
        merges.append((spell(pieces[0]), spell(pieces[1])))
    return vocab, merges


def write_gpt2_tokenizer(out_dir, max_len=1024):
    """Write vocab.json, merges.txt and transformers' tokenizer files; return the tokenizer."""
    from transformers import GPT2TokenizerFast
    from dev.tokenizer import load_asset_ranks
    vocab, merges = gpt2_vocab_and_merges(load_asset_ranks())
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    tok.model_max_length = max_len
    tok.save_pretrained(out_dir)
    return tok


def check_export(model, out_dir, with_tokenizer):
    """Reload out_dir with transformers; compare logits (and the tokenizer). Returns max abs diff."""
    import torch
    from transformers import GPT2LMHeadModel
    cfg = model.config
    hf = GPT2LMHeadModel.from_pretrained(out_dir).eval()
    T = min(16, cfg.max_seq_len)
    idx = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(idx)[0][..., :cfg.vocab_size]
        theirs = hf(idx).logits.float()
    diff = (ours - theirs).abs().max().item()
    if not diff <= LOGITS_TOL:
        raise UserError(f"export check failed: logits of {out_dir} differ from the checkpoint's by "
                        f"{diff:.3g} > {LOGITS_TOL} (max abs over a (2, {T}) batch).")
    if with_tokenizer:
        from transformers import AutoTokenizer
        from dev.tokenizer import get_gpt2_encoding
        enc = get_gpt2_encoding(verbose=False)
        tok = AutoTokenizer.from_pretrained(out_dir)
        for text in CHECK_TEXTS:
            ref = enc.encode(text, allowed_special={"<|endoftext|>"})
            got = tok(text)["input_ids"]
            if got != ref:
                raise UserError(f"export check failed: the exported tokenizer encodes {text!r} "
                                f"as {got}, tiktoken as {ref}.")
    return diff


def check_out_dir(out_dir, checkpoint, force):
    """Refuse, before any work, an --out-dir that cannot be written or that --force must not
    delete: empty, a file, under a file, a folder holding the current folder or the
    checkpoint, or a non-empty folder that is not an export (no config.json)."""
    check_output_dir(out_dir, "--out-dir", "out/d4_hf")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not force:
        raise UserError(f"--out-dir {out_dir} already exists and is not empty; pass --force to "
                        f"replace it or pick another path.")
    real = os.path.realpath(out_dir)
    for what, path in (("the folder you are working in", os.getcwd()),
                       ("the checkpoint being exported", checkpoint)):
        inside = os.path.realpath(path)
        if inside == real or inside.startswith(real.rstrip(os.sep) + os.sep):
            raise UserError(f"--out-dir {out_dir} --force would delete {what} ({inside}); pick a "
                            f"new folder for the export, such as out/d4_hf.")
    if not os.path.exists(os.path.join(out_dir, "config.json")):
        raise UserError(f"--out-dir {out_dir} holds files but no config.json: it is not an "
                        f"export, and --force would delete it; pick another folder (or empty "
                        f"this one yourself).")


def export(checkpoint, out_dir, force=False):
    """Export `checkpoint` to `out_dir`; returns (files written, tokenizer exported?, logits diff)."""
    if not os.path.exists(checkpoint):
        raise UserError(f"checkpoint {checkpoint}: no such file. Pass a model file written by "
                        f"create_model.py or a trainer.")
    check_out_dir(out_dir, checkpoint, force)
    out_dir = os.path.normpath(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    make_dirs(parent, "--out-dir's parent")
    tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
    except OSError as e:
        raise UserError(f"--out-dir {out_dir}: cannot create the folder {tmp} that the export is "
                        f"built in ({e.strerror or e}); pick a path in a folder you can "
                        f"write.") from e
    step = "write"
    try:
        from transformers.utils import logging as hf_logging
        from dev.model import GPT, to_hf
        hf_logging.disable_progress_bar()
        model = GPT.from_checkpoint(checkpoint)
        cfg = model.config
        with_tokenizer = cfg.vocab_size == GPT2_VOCAB
        hf = to_hf(model)
        hf.save_pretrained(tmp)
        if with_tokenizer:
            write_gpt2_tokenizer(tmp, cfg.max_seq_len)
        diff = check_export(model, tmp, with_tokenizer)
        step = "rename"
        if os.path.isdir(out_dir):
            old = tmp + ".old"
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except OSError:
                os.rename(old, out_dir)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except OSError as e:
        raise write_error(e, out_dir, step) from e
    except Exception as e:  # noqa: BLE001 - only safetensors' I/O errors are handled
        if type(e).__name__ != "SafetensorError" or "os error" not in str(e):
            raise
        # safetensors reports a failed write as SafetensorError("... (os error 27)")
        code = int(re.search(r"os error (\d+)", str(e)).group(1))
        raise write_error(OSError(code, os.strerror(code)), out_dir, step) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(os.listdir(out_dir)), with_tokenizer, diff


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Export a model checkpoint as a transformers GPT-2 folder (model, and the "
                    "GPT-2 tokenizer when V = 50257), offline, with a logits check.")
    p.add_argument("checkpoint", help="model checkpoint (create_model.py's or a trainer's)")
    p.add_argument("--out-dir", required=True, help="folder to write (loadable with from_pretrained)")
    p.add_argument("--force", action="store_true", help="replace --out-dir if it already exists")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    files, with_tokenizer, diff = export(args.checkpoint, args.out_dir, args.force)
    from dev.checkpoint import read_checkpoint_config
    cfg = read_checkpoint_config(args.checkpoint)
    print(f"model: {args.checkpoint} ({cfg.describe()})")
    if not cfg.qkv_bias:
        print("note: the model has no QKV bias; transformers' GPT-2 always has one, exported as zeros")
    print(f"check: transformers logits vs the reference model: max abs diff {diff:.3g} "
          f"(limit {LOGITS_TOL})")
    if with_tokenizer:
        print("tokenizer: GPT-2 BPE (vocab.json, merges.txt, tokenizer.json) from the shipped ranks; "
              f"checked against tiktoken on {len(CHECK_TEXTS)} texts")
    else:
        print(f"tokenizer: NOT exported: V={cfg.vocab_size} is not GPT-2's {GPT2_VOCAB}, and "
              f"transformers has no tokenizer for this vocabulary. Feed token ids directly.")
    print(f"wrote {args.out_dir}: {', '.join(files)}")
    print(f"load it with: GPT2LMHeadModel.from_pretrained({args.out_dir!r})", file=sys.stderr)
    return 0


def cli():
    """The console command `gpt2-export-hf` (pyproject.toml): the same as `python -m dev.export_hf`."""
    cli_main(main)


if __name__ == "__main__":
    cli()
