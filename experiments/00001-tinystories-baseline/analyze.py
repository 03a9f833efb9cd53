"""Helpers for experiment 00001: pick a checkpoint, report samples, summarise logs.

Contract (three subcommands, all read-only except --out files, written atomically):
  best-checkpoint RUN_DIR
      prints the path RUN_DIR/model_NNNNNN.bin of the saved checkpoint whose
      step has the lowest logged val_loss (ties: the earlier step).
  samples --train GLOB --out samples.md SAMPLES.json...
      writes the samples of dev.sample's --out-json files as markdown, each
      with how much of it appears verbatim in the training tokens: the longest
      token span shared with the training shards, and the share of its 8-token
      windows (those holding at least one generated token) that occur in
      training. As a control, the same 8-gram share is given for the
      validation shard beside the training one (held-out text of the same kind).
      At most --max-train-tokens training tokens are searched (said in the output).
  summary [--labels ...] LOG.jsonl...
      prints a markdown results table: train/val loss at the evaluated steps
      listed by --steps (train loss: mean over the --train-window steps up to
      the step), the lowest val loss and its step, median ms/step and wall time. Logs with the same label are pooled as mean ± half the range.
  val-zoom --out FIG.png [--from-step S] LOG.jsonl...
      draws the validation loss of each log from step S on (default 150) with
      its lowest point marked: the turn that dev.plot's full-range figure
      flattens.
Bad paths or logs: `error: ...` and exit 1.
"""

import argparse
import glob
import json
import os

import numpy as np

from dev.errors import UserError, cli_main
from dev.logs import read_log
from dev.shards import read_token_shard
from dev.tokenizer import get_gpt2_encoding

NGRAM = 8


def parse_args(argv):
    p = argparse.ArgumentParser(description="Experiment 00001 helpers: best checkpoint, "
                                            "sample report, results table.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("best-checkpoint", help="print the saved checkpoint with the lowest val loss")
    b.add_argument("run_dir", help="a trainer output folder (log.jsonl + model_*.bin)")
    s = sub.add_parser("samples", help="samples as markdown with their overlap with training data")
    s.add_argument("--train", required=True, help="training token shards: a file or a quoted glob")
    s.add_argument("--out", required=True, help="markdown file to write")
    s.add_argument("--max-train-tokens", type=int, default=50_000_000,
                   help="search at most this many training tokens (default: 50,000,000)")
    s.add_argument("sample_files", nargs="+", help="JSON files written by dev.sample --out-json")
    m = sub.add_parser("summary", help="markdown results table from training logs")
    m.add_argument("logs", nargs="+", help="log.jsonl files")
    m.add_argument("--labels", nargs="+", help="one label per log (default: the log's folder)")
    m.add_argument("--steps", default="1,50,100,150,200,300,400,500,600",
                   help="comma-separated steps to tabulate (default: 1,50,100,...,600)")
    m.add_argument("--train-window", type=int, default=10,
                   help="train loss = mean over the steps (s-W, s] to tame batch noise (default: 10)")
    z = sub.add_parser("val-zoom", help="validation loss from a step on, each log's minimum marked")
    z.add_argument("logs", nargs="+", help="log.jsonl files")
    z.add_argument("--out", required=True, help="PNG file to write")
    z.add_argument("--from-step", type=int, default=150, help="first step drawn (default: 150)")
    z.add_argument("--labels", nargs="+", help="one label per log (default: the log's folder)")
    return p.parse_args(argv)


# ---- best checkpoint ---------------------------------------------------------------------
def best_checkpoint(run_dir):
    log = read_log(os.path.join(run_dir, "log.jsonl"))
    steps, vals = log.series("val_loss")
    saved = {int(os.path.basename(f)[6:12]): f
             for f in glob.glob(os.path.join(run_dir, "model_[0-9][0-9][0-9][0-9][0-9][0-9].bin"))}
    best = None
    for step, v in zip(steps.astype(int), vals):
        if step in saved and (best is None or v < best[1]):
            best = (step, v)
    if best is None:
        raise UserError(f"{run_dir}: no saved checkpoint (model_NNNNNN.bin) at a step with a "
                        f"val_loss in log.jsonl; train with -v and -n so they coincide.")
    return saved[best[0]]


# ---- sample overlap ----------------------------------------------------------------------
def match_lengths(seq, corpus):
    """For each i, the longest n such that seq[i:i+n] occurs somewhere in corpus."""
    seq = np.asarray(seq, dtype=np.int64)
    out = np.zeros(len(seq), dtype=np.int64)
    first = {}
    for i in range(len(seq)):
        tok = int(seq[i])
        if tok not in first:
            first[tok] = np.nonzero(corpus == tok)[0]
        cand, n = first[tok], 1 if len(first[tok]) else 0
        while len(cand) and i + n < len(seq):
            cand = cand[cand + n < len(corpus)]
            cand = cand[corpus[cand + n] == seq[i + n]]
            if len(cand):
                n += 1
        out[i] = n
    return out


def overlap_stats(prompt_len, seq, corpus):
    """(longest shared span, share of 8-windows holding a generated token found in corpus, windows)."""
    ml = match_lengths(seq, corpus)
    starts = [i for i in range(max(0, prompt_len - NGRAM + 1), len(seq) - NGRAM + 1)]
    hits = sum(1 for i in starts if ml[i] >= NGRAM)
    return int(ml.max()) if len(ml) else 0, (hits / len(starts) if starts else float("nan")), len(starts)


def load_tokens(pattern, limit):
    files = sorted(glob.glob(pattern))
    if not files:
        raise UserError(f"--train {pattern!r} matches no file; pass the training shards the run used.")
    parts, n = [], 0
    for f in files:
        if n >= limit:
            break
        t = read_token_shard(f)[: limit - n]
        parts.append(t)
        n += len(t)
    return files, np.concatenate(parts).astype(np.int64), n


def report_samples(args):
    files, train, n_train = load_tokens(args.train, args.max_train_tokens)
    enc = get_gpt2_encoding(verbose=False)
    lines = ["# Samples", "",
             f"Training tokens searched: {n_train:,} from {', '.join(files)}"
             f"{' (capped by --max-train-tokens)' if n_train >= args.max_train_tokens else ''}.",
             f"`longest` = the longest token span of prompt + sample found verbatim in training; "
             f"`{NGRAM}-gram` = the share of the sample's {NGRAM}-token windows (with at least one "
             f"generated token) that occur in training.", ""]
    val_path = os.path.join(os.path.dirname(files[0]), "TinyStories_val.bin")
    if os.path.exists(val_path):
        val = read_token_shard(val_path).astype(np.int64)[:20_000]
        _, share, nwin = overlap_stats(0, val, train)
        lines += [f"Control: {share:.1%} of the {nwin:,} {NGRAM}-token windows of the validation "
                  f"shard ({val_path}, first {len(val):,} tokens: held-out text) occur in training.", ""]
    for path in args.sample_files:
        if not os.path.exists(path):
            raise UserError(f"sample file {path}: no such file (write it with dev.sample --out-json).")
        with open(path) as f:
            d = json.load(f)
        how = "greedy" if d["temperature"] == 0 else (f"temperature {d['temperature']}, top-k "
                                                      f"{d['top_k']}, top-p {d['top_p']}")
        lines += [f"## {os.path.basename(d['model'])}: {how}, seed {d['seed']}", "",
                  f"From `{d['model']}`, sampled by `{os.path.basename(path)}`.", ""]
        for k, s in enumerate(d["samples"], 1):
            seq = list(d["prompt_ids"]) + list(s["ids"])
            longest, share, nwin = overlap_stats(len(d["prompt_ids"]), seq, train)
            text = s["text"] if s.get("text") is not None else enc.decode(seq)
            lines += [f"**sample {k}** ({len(s['ids'])} tokens; longest {longest}; "
                      f"{NGRAM}-gram {share:.0%} of {nwin}):", ""]
            lines += ["> " + ln if ln else ">" for ln in text.split("\n")]
            lines.append("")
    tmp = f"{args.out}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


# ---- summary table -----------------------------------------------------------------------
def fmt(values, digits=3):
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mid, half = (max(values) + min(values)) / 2, (max(values) - min(values)) / 2
    return f"{np.mean(values):.{digits}f} ± {half:.{digits}f}" if half else f"{mid:.{digits}f}"


def summary(args):
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in args.logs]
    if len(labels) != len(args.logs):
        raise UserError(f"--labels gives {len(labels)} labels for {len(args.logs)} logs; give one per log.")
    want = [int(s) for s in args.steps.split(",") if s]
    groups = {}
    for label, path in zip(labels, args.logs):
        groups.setdefault(label, []).append(read_log(path))
    w = args.train_window
    print(f"| run | seeds | step | train loss (mean of steps {w} back) | val loss |")
    print("|---|---|---|---|---|")
    for label, logs in groups.items():
        for step in want:
            tr = []
            for lg in logs:
                s, v = lg.series("train_loss")
                sel = (s > step - w) & (s <= step)
                tr.append(float(v[sel].mean()) if step in lg.records and sel.any() else None)
            va = [lg.records.get(step, {}).get("val_loss") for lg in logs]
            if all(v is None for v in tr):
                continue
            print(f"| {label} | {len(logs)} | {step} | {fmt(tr)} | {fmt(va)} |")
    print()
    print("| run | seeds | lowest val loss | at step | final val loss | median ms/step | wall time |")
    print("|---|---|---|---|---|---|---|")
    for label, logs in groups.items():
        best, at, final, ms, wall = [], [], [], [], []
        for lg in logs:
            s, v = lg.series("val_loss")
            i = int(np.argmin(v))
            best.append(v[i]); at.append(s[i]); final.append(v[-1])
            es, e = lg.series("elapsed_s")
            d = np.diff(e)
            # steps whose interval holds no evaluation or checkpoint are the plain step time
            plain = [d[j] for j in range(1, len(d)) if np.isnan(lg.records[int(es[j])].get("val_loss", np.nan))
                     and np.isnan(lg.records[int(es[j + 1])].get("val_loss", np.nan))]
            ms.append(1000 * float(np.median(plain)) if plain else np.nan)
            wall.append(float(e[-1]))
        print(f"| {label} | {len(logs)} | {fmt(best)} | {fmt(at, 0)} | {fmt(final)} | {fmt(ms, 0)} | "
              f"{fmt(wall, 0)} s |")


def val_zoom(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in args.logs]
    if len(labels) != len(args.logs):
        raise UserError(f"--labels gives {len(labels)} labels for {len(args.logs)} logs; give one per log.")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, path in zip(labels, args.logs):
        s, v = read_log(path).series("val_loss")
        keep = s >= args.from_step
        if not keep.any():
            raise UserError(f"{path}: no val_loss at or after step {args.from_step}.")
        line, = ax.plot(s[keep], v[keep], marker=".", label=label)
        i = int(np.argmin(v))
        ax.plot([s[i]], [v[i]], marker="o", markersize=10, fillstyle="none", color=line.get_color())
        ax.annotate(f"min {v[i]:.3f} @ {int(s[i])}", (s[i], v[i]), textcoords="offset points",
                    xytext=(0, -14), ha="center", fontsize=8, color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title(f"validation loss from step {args.from_step} (circle = lowest)")
    ax.margins(y=0.12)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{args.out}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


def main(argv=None):
    args = parse_args(argv)
    if args.cmd == "best-checkpoint":
        print(best_checkpoint(args.run_dir))
    elif args.cmd == "samples":
        report_samples(args)
    elif args.cmd == "val-zoom":
        val_zoom(args)
    else:
        summary(args)
    return 0


if __name__ == "__main__":
    cli_main(main)
