"""The measurements of issue 12 from the faithful runs' logs: a markdown summary and log-step figures.

usage: python experiments/00010-delayed-generalization/faithful.py [RUNS_DIR...] [--out FILE.md] [--fig-dir DIR]

Each RUNS_DIR (default: every runs-faithful*/ beside this script: faithful.json's runs and those of
faithful-ablations.json, faithful-fraction.json and faithful-stability.json, whose reference arms are
faithful.json's) holds <variant>/seed<k>/log.jsonl as the runner writes them (--val-schedule log, --eval-sets train=..., val_mirror_in_train=...,
val_mirror_not_in_train=...). Only complete runs count. Per variant, over its seeds:
  - clean train 99%: the first evaluation at which the clean model gets >= 99% of the whole training
    set right (eval "train"), and val 99%: the same on the validation set;
  - the delay val99 - train99 in steps, and as the ratio val99 / train99 (an init that slows
    memorization also stretches the steps after it);
  - generalized: the share of seeds reaching val 99% within the budget;
  - the validation accuracy averaged over the evaluations of the last 500 steps (not a snapshot of
    an oscillating curve), overall and for the validation pairs whose mirror (b, a) is / is not in
    training;
  - spikes: evaluations after val 99% at which the validation accuracy fell below 90%;
  - val 99% at for the validation pairs whose mirror is in training and for the others (on x+y the
    first can be learned from a + b = b + a alone).
A second table, for the instability question, per variant (summed or taken over seeds as named):
  - clean train drops: evaluations after clean train 99% at which the clean training accuracy fell
    below 90% (the model forgot its own training set, not only the validation set);
  - gradient spikes: episodes (runs of consecutive steps) after clean train 99% in which the
    gradient norm exceeds 10x the median of the 100 steps before it (a local jump, not the slow fall of the gradient as the loss goes to 0),
    and the largest gradient norm seen after step 100;
  - the parameter norm without the LayerNorm gains at the end (mean over seeds) and its largest
    value over the run, the weight size weight decay and the optimizer balance.
A third table lists every run (variant, seed) with the numbers the first two summarize.
Numbers are mean ± sample std (min-max) over the seeds that reached the threshold, with how many did.
Figures (--fig-dir, default figures-faithful/): validation and clean training accuracy against log
steps, one line per variant (median over seeds, the band from min to max), for each group of FIGURES
(compare_div, compare_add: faithful.json; ablations, fraction, stability: the other configs with
their reference arms).
"""

import argparse
import glob
import os
import re
import sys

import numpy as np

from dev.files import atomic_write
from dev.logs import read_log

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLD = 0.99
LAST = 500
# figure name -> the variants it draws (a regular expression over variant names)
FIGURES = {
    "compare_div": r"div-(untied-)?(pytorch|gpt2)-(wd1|no-wd)",
    "compare_add": r"add-(untied-)?(pytorch|gpt2)-(wd1|no-wd)",
    "ablations": r"div-untied-pytorch-(wd1|no-wd|wd1-to-init|wd1-dropout0\.1|wd1-noise0\.01|dropout0\.1|noise0\.01)",
    "fraction": r"div-untied-pytorch-wd1(-frac0\.\d)?",
    "stability": r"div-gpt2-wd1(-decay-matrices|-lr3e-4|-beta2-0\.99|-clip1)?",
}


def eval_acc(log, name):
    steps, vals = [], []
    for s in sorted(log.records):
        e = log.records[s].get("eval")
        if isinstance(e, dict) and name in e and e[name].get("acc") is not None:
            steps.append(s)
            vals.append(float(e[name]["acc"]))
    return np.array(steps, dtype=float), np.array(vals, dtype=float)


def first_reaching(steps, vals, threshold=THRESHOLD):
    hit = np.nonzero(vals >= threshold)[0]
    return float(steps[hit[0]]) if len(hit) else None


def describe(log):
    vs, va = log.series("val_acc")
    ts, ta = eval_acc(log, "train")
    total = log.total_steps
    t99, v99 = first_reaching(ts, ta), first_reaching(vs, va)
    last = vs >= total - LAST
    d = dict(train99=t99, val99=v99, delay=None, ratio=None, val_last=float(va[last].mean()),
             spikes=int(np.sum(va[vs > v99] < 0.9)) if v99 is not None else 0)
    if t99 is not None and v99 is not None:
        d["delay"], d["ratio"] = v99 - t99, v99 / t99
    for name in ("val_mirror_in_train", "val_mirror_not_in_train"):
        s, a = eval_acc(log, name)
        d[name] = float(a[s >= total - LAST].mean()) if len(a) else None
        d[name + "_99"] = first_reaching(s, a) if len(a) else None
    return d


def stat(values, spec="{:.0f}"):
    got = [v for v in values if v is not None]
    if not got:
        return f"not reached (0/{len(values)})"
    m = np.mean(got)
    text = spec.format(m)
    if len(got) > 1:
        text += f" ± {spec.format(np.std(got, ddof=1))} ({spec.format(min(got))}-{spec.format(max(got))})"
    return text + f", {len(got)}/{len(values)}"


def load(runs_dirs):
    variants = {}
    for runs_dir in runs_dirs:
        for path in sorted(glob.glob(os.path.join(runs_dir, "*", "seed*", "log.jsonl"))):
            log = read_log(path)
            if log.complete:
                variants.setdefault(os.path.basename(os.path.dirname(os.path.dirname(path))), []).append(log)
    return dict(sorted(variants.items()))


def table(variants):
    rows = ["| variant | seeds | clean train 99% at | val 99% at | delay (steps) | delay ratio | generalized | "
            "val acc, last 500 steps | mirror in train / not | spikes < 90% after 99% | "
            "val 99% at: mirror in train / not |", "|" + "---|" * 11]
    for name, logs in variants.items():
        ds = [describe(log) for log in logs]
        gen = sum(d["val99"] is not None for d in ds)
        mi = [d["val_mirror_in_train"] for d in ds if d["val_mirror_in_train"] is not None]
        mo = [d["val_mirror_not_in_train"] for d in ds if d["val_mirror_not_in_train"] is not None]
        mirror = f"{np.mean(mi):.3f} / {np.mean(mo):.3f}" if mi and mo else "-"
        rows.append(f"| {name} | {len(ds)} | {stat([d['train99'] for d in ds])} | {stat([d['val99'] for d in ds])} | "
                    f"{stat([d['delay'] for d in ds])} | {stat([d['ratio'] for d in ds], '{:.1f}')} | "
                    f"{gen}/{len(ds)} | {np.mean([d['val_last'] for d in ds]):.4f} | {mirror} | "
                    f"{sum(d['spikes'] for d in ds)} | {mirror_steps(ds, stat)} |")
    return "\n".join(rows) + "\n"


def mirror_steps(ds, fmt):
    """Steps to 99% on the validation pairs whose mirror is in training, and on the others ("-": no mirror split logged)."""
    if all(d["val_mirror_in_train"] is None for d in ds):
        return "-"
    return " / ".join(fmt([d[f"{name}_99"] for d in ds]) for name in ("val_mirror_in_train", "val_mirror_not_in_train"))


def instability(log):
    ts, ta = eval_acc(log, "train")
    t99 = first_reaching(ts, ta)
    steps, g = log.series("grad_norm")
    keep = np.isfinite(g)
    steps, g = steps[keep], g[keep]
    spikes = 0
    if t99 is not None and len(g) > 100:
        before = np.median(np.lib.stride_tricks.sliding_window_view(g[:-1], 100), axis=1)  # g[i-100:i]
        jump = (g[100:] > 10 * before) & (steps[100:] > t99)
        spikes = int(np.sum(jump[1:] & ~jump[:-1]) + jump[0])  # separate episodes, not steps
    g = g[steps > 100]
    norms = [(s, r["param_norm_without_ln_gains"]) for s, r in sorted(log.records.items())
             if isinstance(r.get("param_norm_without_ln_gains"), (int, float))]
    return dict(train_drops=int(np.sum(ta[ts > t99] < 0.9)) if t99 is not None else 0,
                grad_spikes=spikes,
                grad_max=float(g.max()) if len(g) else float("nan"),
                norm_end=float(norms[-1][1]) if norms else float("nan"),
                norm_max=float(max(n for _, n in norms)) if norms else float("nan"))


def stability_table(variants):
    rows = ["| variant | seeds | clean train drops < 90% after train 99% | val drops < 90% after val 99% | "
            "gradient spikes > 10x the last 100 steps' median after train 99% (episodes) | largest gradient norm (max over seeds) | "
            "weight norm without LN gains: end (mean) / largest |", "|" + "---|" * 7]
    for name, logs in variants.items():
        ds = [instability(log) for log in logs]
        val = sum(describe(log)["spikes"] for log in logs)
        rows.append(f"| {name} | {len(ds)} | {sum(d['train_drops'] for d in ds)} | {val} | "
                    f"{sum(d['grad_spikes'] for d in ds)} | {max(d['grad_max'] for d in ds):.1f} | "
                    f"{np.mean([d['norm_end'] for d in ds]):.1f} / {max(d['norm_max'] for d in ds):.1f} |")
    return "\n".join(rows) + "\n"


def seed_of(log):
    m = re.search(r"seed(\d+)", os.path.basename(os.path.dirname(log.path)))
    return int(m.group(1)) if m else None


def per_run_table(variants):
    """One row per run: the numbers the per-variant tables summarize, so each mean can be checked."""
    def steps(v):
        return "-" if v is None else f"{v:.0f}"
    rows = ["| variant | seed | clean train 99% at | val 99% at | delay | val acc, last 500 steps | "
            "val drops < 90% after 99% | clean train drops | gradient-spike episodes | largest gradient norm | "
            "val 99% at: mirror in train / not |", "|" + "---|" * 11]
    for name, logs in variants.items():
        for log in sorted(logs, key=lambda lg: seed_of(lg) or 0):
            d, i = describe(log), instability(log)
            rows.append(f"| {name} | {seed_of(log)} | {steps(d['train99'])} | {steps(d['val99'])} | {steps(d['delay'])} | "
                        f"{d['val_last']:.4f} | {d['spikes']} | {i['train_drops']} | {i['grad_spikes']} | {i['grad_max']:.1f} | "
                        f"{mirror_steps([d], lambda v: steps(v[0]))} |")
    return "\n".join(rows) + "\n"


def figure(variants, group, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in variants if re.fullmatch(FIGURES[group], n)]
    if len(names) < 2:  # nothing to compare yet (e.g. only a reference arm)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("val", "train")):
            series = [log.series("val_acc") if key == "val" else eval_acc(log, "train") for log in variants[name]]
            steps = series[0][0]
            vals = np.array([s[1] for s in series if len(s[1]) == len(steps)])
            ax.plot(steps, np.median(vals, 0), color=color, label=f"{name} ({len(vals)})")
            if len(vals) > 1:
                ax.fill_between(steps, vals.min(0), vals.max(0), color=color, alpha=0.15)
    for ax, title in zip(axes, ("validation accuracy", "training accuracy (clean model, whole set)")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"00010 faithful runs, {group.replace('_', ' ')}: median over seeds, band = min-max", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs_dirs", nargs="*", default=sorted(glob.glob(os.path.join(HERE, "runs-faithful*"))))
    p.add_argument("--out", default=os.path.join(HERE, "faithful-summary.md"))
    p.add_argument("--fig-dir", default=os.path.join(HERE, "figures-faithful"))
    args = p.parse_args(argv)
    variants = load(args.runs_dirs)
    if not variants:
        print(f"error: no complete <variant>/seed<k>/log.jsonl under {', '.join(args.runs_dirs)}", file=sys.stderr)
        return 1
    dirs = ", ".join(f"{os.path.relpath(d, HERE)}/" for d in args.runs_dirs)
    text = ("Written by `python experiments/00010-delayed-generalization/faithful.py` from the complete runs in "
            f"{dirs} (see its docstring for each column).\n\n" + table(variants) +
            "\nInstability, per variant (counts summed over its seeds):\n\n" + stability_table(variants) +
            "\nPer run (\"-\": not reached within the budget):\n\n" + per_run_table(variants))
    atomic_write(args.out, lambda f: f.write(text.encode()))
    print(text, end="")
    for group in FIGURES:
        path = os.path.join(args.fig_dir, f"{group}.png")
        if figure(variants, group, path):
            print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
