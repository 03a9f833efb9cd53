"""Attention maps: each head's causal attention weights for a prompt, from any checkpoint.

    python -m dev.attention --model out/d4.bin --prompt "Once upon a time there was" --out att.png
    python -m dev.attention --model out/mod97.bin --tokenizer data/mod97/tokenizer.bin \
        --prompt "12 / 34 =" --layer 0 --out att_l0.png

The weights are computed by the PyTorch reference model (dev.model.GPT with keep_attention: the
softmax rows before dropout, which tests/test_attention.py holds to the CPU trainer's own att
buffer). Row t of a head's map is the distribution over the positions t2 <= t that position t
attends to; the axes carry the tokens' texts. Without --layer and --head the figure is a grid
of every layer (rows) by every head (columns); --layer L draws that layer's heads, and --head H
with it one head. The prompt is encoded as dev.sample does (GPT-2 BPE, a tokenizer file's word
mode, or --prompt-ids) and keeps its last maxT tokens. --out-npy also writes the weights
(L, NH, T, T). Outputs are written atomically; bad input is an error naming the flag.
"""

import argparse
import sys

import numpy as np

from dev.errors import UserError, cli_main
from dev.files import atomic_write, check_output_file

MAX_TOKENS_DRAWN = 64  # longer prompts are drawn without per-token tick labels


def attention_weights(model, ids):
    """(L, NH, T, T) float64 numpy: the reference model's attention weights for the token ids."""
    import torch
    model.eval()
    model.keep_attention = True
    try:
        with torch.no_grad():
            model(torch.tensor([ids], dtype=torch.long))
        return np.stack([a[0].double().numpy() for a in model.attention])
    finally:
        model.keep_attention = False
        model.attention = None


def token_labels(codec, ids):
    """Each token's own text, with spaces shown as '␣' and newlines as '⏎' so they stay visible."""
    out = []
    for i in ids:
        text = codec.decode([i]).replace(" ", "\u2423").replace("\n", "\u23ce")
        out.append(text if text else f"#{i}")
    return out


def draw(weights, labels, layers, heads, title):
    """A matplotlib figure: one panel per (layer, head) of the selection, token texts on the axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cols = len(layers), len(heads)
    T = weights.shape[-1]
    size = 2.2 + 0.12 * min(T, MAX_TOKENS_DRAWN)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r][c]
            w = np.ma.masked_where(np.triu(np.ones((T, T), dtype=bool), 1), weights[layer, head])
            ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            if T <= MAX_TOKENS_DRAWN:
                ax.set_xticks(range(T))
                ax.set_yticks(range(T))
                fs = max(4, min(9, int(240 / max(T, 1))))
                ax.set_xticklabels(labels, rotation=90, fontsize=fs)
                ax.set_yticklabels(labels, fontsize=fs)
            if r == rows - 1:
                ax.set_xlabel("attended position (key)", fontsize=8)
            if c == 0:
                ax.set_ylabel("position (query)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (size * rows)))  # room for the title
    return fig


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dev.attention",
                                description="Draw each head's causal attention weights for a prompt.")
    p.add_argument("--model", required=True, help="model checkpoint (create_model.py's or a trainer's)")
    p.add_argument("--prompt", default=None, help="text to encode (GPT-2 BPE, or a tokenizer's word mode)")
    p.add_argument("--prompt-ids", default=None, help="comma-separated token ids instead of --prompt")
    p.add_argument("--tokenizer", default=None, help="llm.c tokenizer file (models without GPT-2's vocabulary)")
    p.add_argument("--layer", type=int, default=None, help="draw only this layer (0-based)")
    p.add_argument("--head", type=int, default=None, help="draw only this head (0-based; with or without --layer)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--out-npy", default=None, help="also write the weights (L, NH, T, T) float32 as .npy")
    p.add_argument("--title", default=None, help="figure title (default: the model and the prompt)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from dev.checkpoint import read_checkpoint_config
    from dev.sample import make_codec, parse_prompt_ids
    if (args.prompt is None) == (args.prompt_ids is None):
        raise UserError("give the prompt as --prompt TEXT or --prompt-ids 1,2,3 (one of the two)")
    check_output_file(args.out, "--out")
    if args.out_npy:
        check_output_file(args.out_npy, "--out-npy")
    config = read_checkpoint_config(args.model)
    L, NH = config.n_layer, config.n_head
    if args.layer is not None and not 0 <= args.layer < L:
        raise UserError(f"--layer {args.layer} is outside 0..{L - 1}: {args.model} has {L} layers")
    if args.head is not None and not 0 <= args.head < NH:
        raise UserError(f"--head {args.head} is outside 0..{NH - 1}: {args.model} has {NH} heads per layer")
    codec = make_codec(config.vocab_size, args.tokenizer) if (args.prompt is not None or args.tokenizer
                                                              or config.vocab_size == 50257) else None
    if args.prompt_ids is not None:
        ids = parse_prompt_ids(args.prompt_ids, config.vocab_size)
    else:
        ids = codec.encode(args.prompt)
    if not ids:
        raise UserError("the prompt encodes to no tokens; give a longer --prompt or --prompt-ids")
    if len(ids) > config.max_seq_len:
        print(f"note: the prompt has {len(ids)} tokens; keeping its last {config.max_seq_len} (the model's maxT)",
              file=sys.stderr)
        ids = ids[-config.max_seq_len:]
    from dev.model import GPT
    weights = attention_weights(GPT.from_checkpoint(args.model), ids)
    labels = token_labels(codec, ids) if codec else [str(i) for i in ids]
    layers = [args.layer] if args.layer is not None else list(range(L))
    heads = [args.head] if args.head is not None else list(range(NH))
    shown = " ".join(labels) if len(labels) <= 24 else " ".join(labels[:24]) + " ..."
    title = args.title or f"{args.model}: attention weights for \"{shown}\""
    fig = draw(weights, labels, layers, heads, title)
    import matplotlib.pyplot as plt
    try:
        atomic_write(args.out, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    if args.out_npy:
        atomic_write(args.out_npy, lambda f: np.save(f, weights.astype(np.float32)))
    print(f"wrote {args.out}: {len(layers)} layer(s) x {len(heads)} head(s), {len(ids)} tokens "
          f"(max weight off the diagonal {max_off_diagonal(weights):.3f})")
    return 0


def max_off_diagonal(weights):
    T = weights.shape[-1]
    if T < 2:
        return 0.0
    return float(np.max(np.where(np.tril(np.ones((T, T), dtype=bool), -1), weights, 0.0)))


if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
