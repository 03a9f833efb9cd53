"""Per-run details of an 00010 runner folder, as a markdown table (the runner's results table has
the per-variant means; this one shows each seed, and whether a run stayed generalized).

usage: python experiments/00010-delayed-generalization/analyze.py [RUNS_DIR] [--out FILE.md]
RUNS_DIR defaults to experiments/00010-delayed-generalization/runs-cpu. For every
<variant>/seed<k>/log.jsonl it prints: steps to 99% train accuracy (the step's batch) and to 99%
validation accuracy (the whole validation set, evaluated every val_every steps), the validation
accuracy at the end, its lowest value after first reaching 99% (a drop shows an unstable
generalized solution), the validation loss at the end, the parameter norm at step 1 and at the end,
and the training time.
"""

import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

THRESHOLD = 0.99


def read(path):
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if "train_loss" in r and "error" not in r]


def first(steps, values):
    return next((s for s, v in zip(steps, values) if v is not None and v >= THRESHOLD), None)


def describe(path):
    st = read(path)
    ev = [r for r in st if "val_acc" in r]
    t99 = first([r["step"] for r in st], [r.get("train_acc") for r in st])
    v99 = first([r["step"] for r in ev], [r["val_acc"] for r in ev])
    after = [r["val_acc"] for r in ev if v99 is not None and r["step"] >= v99]
    return {
        "steps": st[-1]["step"], "train99": t99, "val99": v99, "final_val_acc": ev[-1]["val_acc"],
        "min_after": min(after) if after else None, "final_val_loss": ev[-1]["val_loss"],
        "norm0": st[0]["param_norm"], "norm_end": st[-1]["param_norm"], "time_s": st[-1]["elapsed_s"],
    }


def fmt(v, spec="{}"):
    return "-" if v is None else spec.format(v)


def main(argv=None):
    p = argparse.ArgumentParser(description="Per-seed table of an 00010 runs folder.")
    p.add_argument("runs_dir", nargs="?", default=os.path.join(HERE, "runs-cpu"),
                   help="folder with <variant>/seed<k>/log.jsonl (default: runs-cpu beside this script)")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.runs_dir, "*", "seed*", "log.jsonl")))
    if not paths:
        print(f"error: no <variant>/seed<k>/log.jsonl under {args.runs_dir}", file=sys.stderr)
        return 1
    rows = ["| variant | seed | steps | 99% train at | 99% val at | final val acc | lowest val acc after 99% "
            "| final val loss | param norm step 1 → end | time |", "|" + "---|" * 10]
    for path in paths:
        seed_dir = os.path.dirname(path)
        variant, seed = os.path.basename(os.path.dirname(seed_dir)), os.path.basename(seed_dir)[4:]
        d = describe(path)
        rows.append(f"| {variant} | {seed} | {d['steps']} | {fmt(d['train99'])} | {fmt(d['val99'])} | "
                    f"{d['final_val_acc']:.4f} | {fmt(d['min_after'], '{:.4f}')} | {d['final_val_loss']:.3f} | "
                    f"{d['norm0']:.1f} → {d['norm_end']:.1f} | {d['time_s'] / 60:.1f} min |")
    text = "\n".join(rows) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
