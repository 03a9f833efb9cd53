"""Turn training logs (JSONL) into PNG figures: loss curves and the grokking accuracy figure.

Contract: `python -m dev.plot LOG.jsonl [LOG2.jsonl ...] --out-dir DIR
[--labels A B ...]` writes
  DIR/<prefix>loss.png       train loss and validation loss against step (log y
                             when the losses span more than a factor 10)
  DIR/<prefix>accuracy.png   only when some log has accuracy (example data):
                             train and validation accuracy against step on a
                             log x-axis (the delayed-generalization figure)
and prints the paths. With one label, train (solid) and validation (dashed,
dots) share one panel; with several labels, train and validation get a panel
each and every label is one colour in a legend. Logs that share a label (for
example the seeds of one variant) are drawn as their mean at each step with a
shaded min-max band; at each step the mean is over the runs that logged it.
Default labels are the logs' folders. The logs are read with dev.logs
(unknown keys ignored, a line cut short by a crash dropped). Files are
written atomically. A missing or malformed log, or a --labels count that does
not match, prints `error: ...` and exits 1.
"""

import argparse
import os
import warnings

import numpy as np

from dev.errors import UserError, cli_main
from dev.logs import read_log

FIGSIZE = (11.0, 4.5)   # inches; at DPI this is 1320 x 540 pixels
DPI = 120


def smooth(values, window):
    """Trailing mean over `window` points (window <= 1: unchanged); NaN-aware."""
    if window <= 1 or len(values) == 0:
        return values
    v = np.where(np.isnan(values), 0.0, values)
    ok = (~np.isnan(values)).astype(np.float64)
    cs, cn = np.cumsum(np.insert(v, 0, 0.0)), np.cumsum(np.insert(ok, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cs[idx] - cs[lo]) / (cn[idx] - cn[lo])


def aggregate(series):
    """Mean, min and max over runs at each step: series is a list of (steps, values).

    Returns (steps, mean, lo, hi); at each step only the runs that logged it count.
    """
    series = [(s, v) for s, v in series if len(s)]
    if not series:
        return (np.zeros(0),) * 4
    steps = np.unique(np.concatenate([s for s, _ in series]))
    grid = np.full((len(series), len(steps)), np.nan)
    for r, (s, v) in enumerate(series):
        grid[r, np.searchsorted(steps, s)] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a diverged step)
        return steps, np.nanmean(grid, 0), np.nanmin(grid, 0), np.nanmax(grid, 0)


def group_runs(logs, labels):
    """Ordered dict label -> list of RunLog (first-appearance order)."""
    groups = {}
    for log, label in zip(logs, labels):
        groups.setdefault(label, []).append(log)
    return groups


def default_labels(paths):
    """Each log's folder, relative to the folder all the logs share."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if len(dirs) == 1:
        return [os.path.basename(dirs[0]) or dirs[0]]
    common = os.path.commonpath(dirs)
    return [os.path.relpath(d, common) if d != common else os.path.basename(d) for d in dirs]


def _draw(ax, logs, key, color, label, linestyle, marker, window):
    series = []
    for log in logs:
        s, v = log.series(key)
        series.append((s, smooth(v, window) if key.startswith("train") else v))
    steps, mean, lo, hi = aggregate(series)
    if not len(steps):
        return False
    n = len([1 for s, _ in series if len(s)])
    text = label if n == 1 else f"{label} (mean of {n}, min-max band)"
    ax.plot(steps, mean, color=color, linestyle=linestyle, marker=marker,
            markersize=2.5 if marker else None, linewidth=1.3, label=text)
    if n > 1:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    return True


def _figure(groups, keys, ylabel, x_log, y_log, title, window):
    """One figure: a panel per key when there are several labels, else one shared panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {keys[0]: ("-", None), keys[1]: ("--", "o")}
    names = {keys[0]: "train", keys[1]: "validation"}
    single = len(groups) == 1
    present = [k for k in keys if any(log.has(k) for logs in groups.values() for log in logs)]
    panels = [present] if single else [[k] for k in present]
    fig, axes = plt.subplots(1, len(panels), figsize=FIGSIZE, dpi=DPI, squeeze=False)
    for ax, panel_keys in zip(axes[0], panels):
        for i, (label, logs) in enumerate(groups.items()):
            for key in panel_keys:
                linestyle, marker = styles[key]
                text = f"{label} {names[key]}" if single else label
                _draw(ax, logs, key, colors[i % len(colors)], text, linestyle, marker, window)
        ax.set_xlabel("step" + (" (log scale)" if x_log else ""))
        ax.set_ylabel(ylabel if single else f"{names[panel_keys[0]]} {ylabel}")
        if x_log:
            ax.set_xscale("log")
        ys = [np.asarray(ln.get_ydata(), dtype=np.float64) for ln in ax.get_lines()]
        ys = np.concatenate(ys) if ys else np.zeros(0)
        ys = ys[np.isfinite(ys)]
        if y_log and len(ys) and ys.min() > 0 and ys.max() / ys.min() > 10:
            ax.set_yscale("log")  # a log axis only when the values span more than a decade
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save(fig, path):
    import matplotlib.pyplot as plt
    tmp = f"{path}.tmp.{os.getpid()}"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def plot_runs(logs, labels, out_dir, prefix="", title=None, loss_x="auto", smooth_window=1):
    """Write the loss (and accuracy) PNGs for RunLogs with their labels; return the paths."""
    if len(logs) != len(labels):
        raise ValueError("plot_runs: one label per log")
    usable = [(log, lab) for log, lab in zip(logs, labels) if log.records]
    if not usable:
        raise UserError("no step records in " + ", ".join(log.path for log in logs) +
                        ": nothing to plot (did the runs start training?).")
    groups = group_runs([u[0] for u in usable], [u[1] for u in usable])
    os.makedirs(out_dir, exist_ok=True)
    has_acc = any(log.has("train_acc") or log.has("val_acc") for log, _ in usable)
    x_log = has_acc if loss_x == "auto" else loss_x == "log"
    written = []
    fig = _figure(groups, ("train_loss", "val_loss"), "loss", x_log, True, title, smooth_window)
    path = os.path.join(out_dir, f"{prefix}loss.png")
    _save(fig, path)
    written.append(path)
    if has_acc:
        fig = _figure(groups, ("train_acc", "val_acc"), "accuracy", True, False, title, smooth_window)
        for ax in fig.axes:
            ax.set_ylim(-0.02, 1.02)
        path = os.path.join(out_dir, f"{prefix}accuracy.png")
        _save(fig, path)
        written.append(path)
    return written


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Plot training logs: loss curves, and train/validation accuracy against log "
                    "steps when accuracy is logged. Logs that share a label are drawn as a mean "
                    "with a min-max band.")
    p.add_argument("logs", nargs="+", help="log.jsonl files written by the trainers (-o DIR)")
    p.add_argument("--out-dir", required=True, help="folder for the PNG files")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one legend label per log (default: the logs' folders); repeat a label to "
                        "average those runs")
    p.add_argument("--prefix", default="", help="file name prefix, e.g. 'baseline_' (default: none)")
    p.add_argument("--title", default=None, help="figure title (default: none)")
    p.add_argument("--loss-x", choices=("auto", "linear", "log"), default="auto",
                   help="x-axis of the loss figure: auto = log when accuracy is logged (default)")
    p.add_argument("--smooth", type=int, default=1,
                   help="trailing mean over this many steps for the train curves (default: 1 = raw)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.logs):
        raise UserError(f"--labels has {len(args.labels)} labels for {len(args.logs)} logs; give "
                        f"one label per log (repeat a label to average runs).")
    if args.smooth < 1:
        raise UserError(f"--smooth {args.smooth} must be >= 1 (1 = no smoothing).")
    logs = [read_log(p) for p in args.logs]
    for log in logs:
        if log.truncated:
            print(f"note: {log.path}: last line was cut short (a crash?) and is ignored")
        if log.error:
            print(f"note: {log.path}: the run diverged at step {log.error.get('step')} "
                  f"({log.error.get('error')})")
    labels = args.labels or default_labels(args.logs)
    paths = plot_runs(logs, labels, args.out_dir, args.prefix, args.title, args.loss_x, args.smooth)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cli():
    """The console command `gpt2-plot` (pyproject.toml): the same as `python -m dev.plot`."""
    cli_main(main)


if __name__ == "__main__":
    cli()
