"""experiments/00010-delayed-generalization/faithful.py measures what issue 12 asks from the logs.

Synthetic logs with known crossings: the first clean-train and validation evaluations at >= 99%, the
delay and its ratio, the share of seeds that generalize, the mean over the last 500 steps, drops after
99% and gradient-spike episodes. Each expected number follows from how the log was built, so a
measurement that looks at the wrong series (the minibatch accuracy instead of the clean one, a
snapshot instead of the window) or counts spike steps instead of episodes fails here.
"""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "00010-delayed-generalization", "faithful.py")


@pytest.fixture(scope="module")
def faithful():
    spec = importlib.util.spec_from_file_location("faithful_analysis", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def at(value, step):
    return value(step) if callable(value) else value


def write_log(path, steps, train_acc, val_acc, grad=lambda s: 1.0, mirror=(0.5, 0.25)):
    """A log of `steps` steps, evaluated every 10 steps, with clean train / val accuracy functions of the step
    (the two mirror halves of validation: constants or functions of the step)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"config": {"steps": steps}}) + "\n")
        for s in range(1, steps + 1):
            rec = {"step": s, "train_loss": 1.0, "train_acc": 0.0, "grad_norm": grad(s), "lr": 1e-3}
            if s % 10 == 0:
                rec.update(val_loss=1.0, val_acc=val_acc(s),
                           eval={"train": {"loss": 1.0, "acc": train_acc(s)},
                                 "val_mirror_in_train": {"loss": 1.0, "acc": at(mirror[0], s)},
                                 "val_mirror_not_in_train": {"loss": 1.0, "acc": at(mirror[1], s)}},
                           param_norm_without_ln_gains=100.0 - s / 100)
            f.write(json.dumps(rec) + "\n")


def grokking_run(path):
    # clean train reaches 99% at step 200 (the minibatch accuracy never does: it is 0 throughout),
    # validation at 600, one validation drop at 800, one clean-train drop at 850, gradient spikes over
    # steps 700-702 (one episode) and at 900 (another).
    write_log(path, 1000,
              train_acc=lambda s: 0.5 if s == 850 else (1.0 if s >= 200 else 0.1),
              val_acc=lambda s: 0.5 if s == 800 else (0.995 if s >= 600 else 0.0),
              grad=lambda s: 50.0 if s in (700, 701, 702, 900) else 1.0)


def memorizing_run(path):
    write_log(path, 1000, train_acc=lambda s: 1.0 if s >= 400 else 0.1, val_acc=lambda s: 0.2)


def test_measurements_of_one_run(tmp_path, faithful):
    path = tmp_path / "runs-x" / "v" / "seed1" / "log.jsonl"
    grokking_run(str(path))
    log = faithful.read_log(str(path))
    d = faithful.describe(log)
    assert d["train99"] == 200 and d["val99"] == 600
    assert d["delay"] == 400 and d["ratio"] == pytest.approx(3.0)
    assert d["spikes"] == 1
    # evaluations at steps 500..1000 (51 of them): one at 0.5 (step 800), the others at 0.995 except
    # steps 500-590 (10 evaluations) at 0.0
    assert d["val_last"] == pytest.approx((40 * 0.995 + 0.5) / 51)
    assert d["val_mirror_in_train"] == pytest.approx(0.5) and d["val_mirror_not_in_train"] == pytest.approx(0.25)
    inst = faithful.instability(log)
    assert inst["train_drops"] == 1
    assert inst["grad_spikes"] == 2
    assert inst["grad_max"] == 50.0
    assert inst["norm_end"] == pytest.approx(90.0) and inst["norm_max"] == pytest.approx(99.9)


def test_table_over_seeds_and_a_run_that_never_generalizes(tmp_path, faithful):
    runs = tmp_path / "runs-x"
    grokking_run(str(runs / "v" / "seed1" / "log.jsonl"))
    memorizing_run(str(runs / "v" / "seed2" / "log.jsonl"))
    memorizing_run(str(runs / "w" / "seed1" / "log.jsonl"))
    # w seed 2: the pairs whose mirror is in training reach 99% at step 10, the others at 300
    write_log(str(runs / "w" / "seed2" / "log.jsonl"), 1000, lambda s: 1.0, lambda s: 1.0,
              mirror=(1.0, lambda s: 0.995 if s >= 300 else 0.5))
    # an incomplete run (the log stops before its steps) is left out
    write_log(str(runs / "w" / "seed3" / "log.jsonl"), 1000, lambda s: 1.0, lambda s: 1.0)
    lines = open(runs / "w" / "seed3" / "log.jsonl").read().splitlines()[:-5]
    open(runs / "w" / "seed3" / "log.jsonl", "w").write("\n".join(lines) + "\n")

    variants = faithful.load([str(runs)])
    assert sorted(variants) == ["v", "w"] and len(variants["w"]) == 2
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in faithful.table(variants).splitlines()[2:]}
    # v: train 99% at 200 and 400 -> mean 300, sample std 141; val 99% only in seed 1
    assert rows["v"][0] == "2"
    assert rows["v"][1] == "300 ± 141 (200-400), 2/2"
    assert rows["v"][2] == "600, 1/2"
    assert rows["v"][4] == "3.0, 1/2"
    assert rows["v"][5] == "1/2"
    # w: seed 2 is 99% at the first evaluation (step 10) for both; seed 1 never generalizes
    assert rows["w"][2] == "10, 1/2" and rows["w"][3] == "0, 1/2" and rows["w"][5] == "1/2"
    assert rows["w"][6] == f"{(0.2 + 1.0) / 2:.4f}"
    assert rows["v"][9] == "not reached (0/2) / not reached (0/2)"
    assert rows["w"][9] == "10, 1/2 / 300, 1/2"
    stab = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
            for r in faithful.stability_table(variants).splitlines()[2:]}
    assert stab["v"][1:4] == ["1", "1", "2"]
    assert stab["w"][1:4] == ["0", "0", "0"]
    per_run = [[c.strip() for c in r.split("|")[1:-1]] for r in faithful.per_run_table(variants).splitlines()[2:]]
    assert per_run[0] == ["v", "1", "200", "600", "400", f"{(40 * 0.995 + 0.5) / 51:.4f}", "1", "1", "2", "50.0", "- / -"]
    assert per_run[3][-1] == "10 / 300"
    assert per_run[1][:5] == ["v", "2", "400", "-", "-"]
    assert [r[:2] for r in per_run] == [["v", "1"], ["v", "2"], ["w", "1"], ["w", "2"]]


def test_the_script_writes_the_summary_and_the_figures(tmp_path, faithful):
    runs = tmp_path / "runs-faithful"
    for name in ("div-untied-pytorch-wd1", "div-untied-pytorch-wd1-frac0.3"):
        for seed in (1, 2):
            grokking_run(str(runs / name / f"seed{seed}" / "log.jsonl"))
    out, figs = tmp_path / "summary.md", tmp_path / "figs"
    assert faithful.main([str(runs), "--out", str(out), "--fig-dir", str(figs)]) == 0
    text = out.read_text()
    assert "| div-untied-pytorch-wd1-frac0.3 | 2 | 200 ± 0 (200-200), 2/2 |" in text
    assert "Instability" in text
    # the fraction figure has both variants; the other groups have fewer than two and are not drawn
    assert sorted(os.listdir(figs)) == ["fraction.png"]
    assert faithful.main([str(tmp_path / "nothing"), "--out", str(out)]) == 1
