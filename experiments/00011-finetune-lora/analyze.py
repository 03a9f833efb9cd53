"""Results of 00011 from its committed logs: results.md and the figures.

    python experiments/00011-finetune-lora/analyze.py --exp-dir experiments/00011-finetune-lora

Reads runs/before/log.jsonl (the base model evaluated: one step at lr 0) and
runs/<method>_seed<k>/log.jsonl. Per method, over the seeds (mean, and the range as ±half):
trainable floats N (the log header's num_trained), the memory of their gradients and AdamW
moments (3 N float32), the median step time (from tokens_per_s; the step without evaluation),
the docs validation loss (lowest, its step, final), the story validation loss at the end and
its rise over the base model's (forgetting), the train loss (mean of the last 10 steps).
Figures: docs_val.png (docs validation loss against steps, the base model at step 0),
stories_val.png (the story validation loss: what fine-tuning costs the original task).
"""

import argparse
import glob
import os
import re

import numpy as np

from dev.files import atomic_write
from dev.logs import read_log

METHODS = ("full", "lora-r4", "lora-r32", "lora-r128", "lora-r4-lr1e-2", "lora-r32-lr1e-2")
LABELS = {"full": "full fine-tune, lr 1e-3", "lora-r4": "LoRA r=4, lr 1e-3", "lora-r32": "LoRA r=32, lr 1e-3",
          "lora-r128": "LoRA r=128 (= C), lr 1e-3", "lora-r4-lr1e-2": "LoRA r=4, lr 1e-2", "lora-r32-lr1e-2": "LoRA r=32, lr 1e-2"}
COLORS = {"full": "tab:red", "lora-r4": "tab:blue", "lora-r32": "tab:green", "lora-r128": "tab:purple", "lora-r4-lr1e-2": "tab:cyan",
          "lora-r32-lr1e-2": "tab:olive"}
LINES = {"lora-r4-lr1e-2": "--", "lora-r32-lr1e-2": "--"}


def eval_series(log, name):
    steps, vals = [], []
    for s in sorted(log.records):
        e = log.records[s].get("eval")
        if isinstance(e, dict) and name in e and e[name].get("loss") is not None:
            steps.append(s)
            vals.append(float(e[name]["loss"]))
    return np.array(steps), np.array(vals)


def pm(values, fmt="{:.3f}"):
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format((v.max() - v.min()) / 2)}"


def load(exp_dir):
    runs = {}
    for path in sorted(glob.glob(os.path.join(exp_dir, "runs", "*_seed*", "log.jsonl"))):
        m = re.match(r"(.+)_seed(\d+)$", os.path.basename(os.path.dirname(path)))
        log = read_log(path)
        if m and m.group(1) in METHODS and log.complete:
            runs.setdefault(m.group(1), []).append(log)
    before = read_log(os.path.join(exp_dir, "runs", "before", "log.jsonl"))
    return runs, before


def summary(runs, before):
    b_docs = float(before.records[1]["val_loss"])
    b_story = float(before.records[1]["eval"]["stories"]["loss"])
    rows = []
    for method in METHODS:
        logs = runs.get(method, [])
        if not logs:
            continue
        cfg = logs[0].config
        N, P = int(cfg["num_trained"]), int(cfg["num_parameters"])
        B, T = int(cfg["B"]), int(cfg["T"])
        ms = [float(np.median(B * T / log.series("tokens_per_s")[1]) * 1e3) for log in logs]
        best, best_step, final, story_final, train_end = [], [], [], [], []
        for log in logs:
            s, v = log.series("val_loss")
            best.append(v.min())
            best_step.append(s[int(np.argmin(v))])
            final.append(v[-1])
            story_final.append(eval_series(log, "stories")[1][-1])
            train_end.append(log.series("train_loss")[1][-10:].mean())
        rows.append(dict(method=method, N=N, P=P, share=N / (P if method == "full" else P + N),
                         mem_mb=3 * 4 * N / 1e6, ms=ms, best=best, best_step=best_step, final=final,
                         story_final=story_final, forgetting=[x - b_story for x in story_final],
                         train_end=train_end, seeds=len(logs)))
    return b_docs, b_story, rows


def table(b_docs, b_story, rows):
    out = [f"Base model (step 0): docs validation loss {b_docs:.3f}, story validation loss {b_story:.3f}.", "",
           "| method | trained floats N | share of the model | grads + AdamW m, v | median ms/step | docs val: lowest (step) | docs val at 200 | train loss (last 10 steps) | story val at 200 | forgetting (story val rise) | seeds |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = "/".join(str(int(s)) for s in r["best_step"])
        out.append(f"| {LABELS[r['method']]} | {r['N']:,} | {100 * r['share']:.2f}% | {r['mem_mb']:.2f} MB | "
                   f"{pm(r['ms'], '{:.0f}')} | {pm(r['best'])} ({steps}) | {pm(r['final'])} | {pm(r['train_end'])} | "
                   f"{pm(r['story_final'])} | {pm(r['forgetting'], '{:+.3f}')} | {r['seeds']} |")
    return "\n".join(out) + "\n"


def figure(runs, before, key, path, title, ylabel):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    b = float(before.records[1]["val_loss"] if key == "docs" else before.records[1]["eval"]["stories"]["loss"])
    for method in METHODS:
        logs = runs.get(method, [])
        if not logs:
            continue
        series = [log.series("val_loss") if key == "docs" else eval_series(log, "stories") for log in logs]
        steps = np.concatenate([[0], series[0][0]])
        vals = np.array([np.concatenate([[b], s[1]]) for s in series])
        ax.plot(steps, vals.mean(0), color=COLORS[method], linestyle=LINES.get(method, "-"),
                label=f"{LABELS[method]} ({len(logs)} seeds)")
        ax.fill_between(steps, vals.min(0), vals.max(0), color=COLORS[method], alpha=0.2)
    ax.axhline(b, color="gray", linestyle=":", label="base model")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args()
    runs, before = load(args.exp_dir)
    b_docs, b_story, rows = summary(runs, before)
    text = table(b_docs, b_story, rows)
    atomic_write(os.path.join(args.exp_dir, "results.md"), lambda f: f.write(text.encode()))
    print(text)
    figure(runs, before, "docs", os.path.join(args.exp_dir, "docs_val.png"),
           "00011: d4 fine-tuned on the project's docs (validation split)", "docs validation loss")
    figure(runs, before, "stories", os.path.join(args.exp_dir, "stories_val.png"),
           "00011: the original task during fine-tuning (story validation split)", "story validation loss")


if __name__ == "__main__":
    main()
