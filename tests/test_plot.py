"""dev/plot.py and dev/logs.py: logs -> PNG figures.

Checks:
  - synthetic grokking-shaped logs (3 seeds of one label, 2 of another, plus
    unknown keys, null values and a line cut short by a crash) become
    loss.png and accuracy.png that matplotlib reads back at the stated size
    (11 x 4.5 in at 120 dpi = 1320 x 540 px) and that are not blank (pixel
    std > 0.05 and > 1% of pixels not white; a blank figure has std 0);
  - logs without accuracy (token data) give loss.png only;
  - aggregate() (the mean and min-max band over seeds) on hand-made series
    with different step sets gives the known numbers;
  - the log reader: nulls become NaN, a resumed log's second header is kept,
    a malformed middle line or a --labels count mismatch exits 1 with a
    message naming the file;
  - a real 5-step run of the C trainer ./train_gpt2 on addition-mod-97 data
    with a tiny model is plotted and checked the same way (skipped with the
    reason when ./train_gpt2 is not built: `make train_gpt2`).
Run: python -m pytest -q tests/test_plot.py
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from dev.logs import first_step_reaching, read_log
from dev.plot import aggregate, plot_runs
from helpers import check_png, REPO

TRAINER = os.path.join(REPO, "train_gpt2")


def write_log(path, records, tail=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.write(tail)
    return path


def grokking_records(delay, seed, with_acc=True, steps=3000):
    rng = np.random.default_rng(seed)
    recs = [{"config": {"total_steps": steps}, "commit": "abc", "hardware": "test", "trainer": "synthetic"}]
    for step in range(1, steps + 1, 3):
        r = {"step": step, "train_loss": 4.6 * math.exp(-step / 200) + 0.01,
             "train_acc": min(1.0, step / 300 + rng.uniform(0, 0.05)) if with_acc else None,
             "lr": 1e-3, "grad_norm": None, "unknown_key": [1, 2]}
        if step % 60 == 1:
            acc = 1 / (1 + math.exp(-(step - delay) / 100))
            r["val_loss"] = 4.6 * (1 - acc) + 0.02
            r["val_acc"] = acc if with_acc else None
        recs.append(r)
    recs.append({"step": steps, "sample": "1 + 2 = 3"})
    return recs


def test_synthetic_logs(tmp_path):
    paths, labels = [], []
    for label, delay, seeds in (("baseline", 800, 3), ("no-wd", 2500, 2)):
        for s in range(seeds):
            recs = grokking_records(delay + 100 * s, s)
            tail = '{"step": 99999, "train_lo' if (label, s) == ("no-wd", 1) else ""
            paths.append(write_log(str(tmp_path / label / f"seed{s}" / "log.jsonl"), recs, tail))
            labels.append(label)
    r = subprocess.run([sys.executable, "-m", "dev.plot", *paths, "--out-dir", str(tmp_path / "fig"),
                        "--labels", *labels, "--title", "synthetic"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cut short" in r.stdout
    for name in ("loss.png", "accuracy.png"):
        check_png(tmp_path / "fig" / name)


def test_no_accuracy_gives_loss_only(tmp_path):
    log = read_log(write_log(str(tmp_path / "run" / "log.jsonl"), grokking_records(500, 0, with_acc=False)))
    assert not log.has("train_acc") and not log.has("val_acc") and log.has("val_loss")
    written = plot_runs([log], ["tokens"], str(tmp_path / "fig"))
    assert [os.path.basename(p) for p in written] == ["loss.png"]
    check_png(written[0])
    assert not os.path.exists(tmp_path / "fig" / "accuracy.png")


def test_aggregate_known_values():
    series = [(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])),
              (np.array([1.0, 3.0]), np.array([3.0, 5.0])),
              (np.array([2.0, 4.0]), np.array([np.nan, 8.0]))]
    steps, mean, lo, hi = aggregate(series)
    assert steps.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(mean, [2.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(lo, [1.0, 2.0, 3.0, 8.0])
    np.testing.assert_array_equal(hi, [3.0, 2.0, 5.0, 8.0])


def test_log_reader(tmp_path):
    recs = [{"config": {"total_steps": 4}, "commit": "c", "hardware": "h", "trainer": "t"},
            {"step": 1, "train_loss": 2.0, "train_acc": None, "lr": 1e-3},
            {"step": 2, "train_loss": None, "train_acc": 0.5, "val_loss": 1.5, "val_acc": 0.25},
            {"resume": {"state": "s", "from_step": 2}, "config": {"total_steps": 4}},
            {"step": 3, "train_loss": 1.0, "train_acc": 1.0},
            {"step": 4, "train_loss": 0.5, "train_acc": 1.0, "val_loss": 0.5, "val_acc": 1.0}]
    log = read_log(write_log(str(tmp_path / "log.jsonl"), recs))
    assert len(log.headers) == 2 and log.total_steps == 4 and log.complete
    s, v = log.series("train_loss")
    assert s.tolist() == [1, 3, 4] and v.tolist() == [2.0, 1.0, 0.5]  # null -> NaN -> dropped
    s, v = log.series("val_acc")
    assert s.tolist() == [2, 4] and first_step_reaching(s, v, 0.99) == 4
    assert first_step_reaching(*log.series("train_acc"), 0.99) == 3
    assert first_step_reaching(s, v, 1.5) is None
    incomplete = read_log(write_log(str(tmp_path / "short.jsonl"), recs[:3]))
    assert not incomplete.complete and incomplete.last_step == 2

    bad = write_log(str(tmp_path / "bad.jsonl"), recs[:2], "not json\n" + json.dumps(recs[2]) + "\n")
    r = subprocess.run([sys.executable, "-m", "dev.plot", bad, "--out-dir", tmp_path / "f"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "bad.jsonl line 3" in r.stderr and "Traceback" not in r.stderr, r.stderr
    good = str(tmp_path / "log.jsonl")
    r = subprocess.run([sys.executable, "-m", "dev.plot", good, good, "--out-dir", tmp_path / "f",
                        "--labels", "only-one"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--labels has 1 labels for 2 logs" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "dev.plot", tmp_path / "missing.jsonl", "--out-dir",
                        tmp_path / "f"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "missing.jsonl: no such file" in r.stderr, r.stderr


@pytest.mark.skipif(not os.access(TRAINER, os.X_OK),
                    reason="./train_gpt2 is not built (run `make train_gpt2`)")
def test_real_trainer_log(tmp_path, run_cli):
    data = tmp_path / "data"
    r = run_cli("dev.mod_arith", "--out-dir", data)
    assert r.returncode == 0, r.stderr
    r = run_cli("create_model.py", "--config", "mod97", "--n-embd", 32, "--n-head", 2,
                "--out", tmp_path / "model.bin")
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "run"
    args = ["-e", tmp_path / "model.bin", "-i", data / "train.bin", "-j", data / "val.bin",
            "--tokenizer", data / "tokenizer.bin", "-o", run_dir,
            "-b", 32, "-x", 5, "-v", 2, "-m", 4, "-s", 5, "-g", 4, "--threads", 1]
    r = subprocess.run([TRAINER, *map(str, args)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    log = read_log(run_dir / "log.jsonl")
    assert log.complete and log.last_step == 5
    assert log.series("train_acc")[0].tolist() == [1, 2, 3, 4, 5]
    assert log.series("val_acc")[0].tolist() == [2, 4, 5]
    written = plot_runs([log], ["real"], str(tmp_path / "fig"))
    assert [os.path.basename(p) for p in written] == ["loss.png", "accuracy.png"]
    for p in written:
        check_png(p)
