"""dev/run.py: the experiment runner, on its configs and against the real C trainer.

Checks:
  - --help explains the config format with an example and the key -> flag table;
  - bad configs (unknown keys, a typo'd setting, duplicate or missing variants,
    bad seeds, an unknown template field, a runner-reserved key, --only of an
    unknown variant) raise a UserError that names the problem;
  - --dry-run on experiments/00010-delayed-generalization/config.json plans
    9 variants x 3 seeds = 27 runs with the Power et al. baseline flags
    (batch 512, lr 0.001 constant after 10 warmup steps, betas 0.9/0.98,
    weight decay 1) and each variant's change reaching the trainer command,
    and writes nothing; the four faithful*.json configs of issue 12 plan their
    80, 25, 30 and 20 runs, also writing nothing;
  - with the real ./train_gpt2 (skipped, with the reason, when `make
    train_gpt2` fails): the smoke config (2 variants x 1 seed, 20 steps, a
    32-channel model) in a scratch experiment folder runs end to end: both
    logs complete with validation at steps 10 and 20, the trainer's own
    config record shows weight-decay 1 and 0, run.json says complete, the
    figures open and are not blank, results-smoke.md has both rows; a second
    invocation skips both runs and leaves the logs byte-identical;
  - an interrupted run (SIGINT to the runner once the first checkpoint
    exists) resumes from its newest state file on the next invocation and
    ends with every step 1..N logged exactly once and one checkpoint pair left;
  - a setting the trainer does not know fails clearly: up front when its
    flag is missing from the trainer's --help, and from the trainer's own
    "unknown flag" error when the --help check is bypassed; the other runs
    still complete and the runner returns 1.
Run: python -m pytest -q tests/test_run.py
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dev import run as runner
from dev.errors import UserError
from dev.logs import read_log
from helpers import check_png, REPO

EXP = os.path.join(REPO, "experiments", "00010-delayed-generalization")
CONFIG = os.path.join(EXP, "config.json")
SMOKE = os.path.join(EXP, "smoke.json")


def run_module(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dev.run", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def scratch_experiment(tmp_path, edit=None, name="smoke.json"):
    """A copy of the smoke config (optionally edited) in tmp_path/exp."""
    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    with open(SMOKE) as f:
        cfg = json.load(f)
    if edit:
        edit(cfg)
    (exp / name).write_text(json.dumps(cfg, indent=1))
    return exp / name


@pytest.fixture(scope="module")
def trainer_built():
    r = subprocess.run(["nice", "-n", "10", "make", "-s", "train_gpt2"], cwd=REPO,
                       capture_output=True, text=True)
    if r.returncode != 0 or not os.access(os.path.join(REPO, "train_gpt2"), os.X_OK):
        pytest.skip(f"./train_gpt2 cannot be built here: {(r.stderr or r.stdout)[-300:]}")


def test_help_explains_config():
    r = run_module("--help")
    assert r.returncode == 0
    for needle in ("config format (JSON)", "example:", '"variants"', "weight_decay --weight-decay",
                   "dropout --dropout", "{seed}", "--dry-run", "--only"):
        assert needle in r.stdout, f"--help lacks {needle!r}"


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c.update(extra=1), "unknown top-level keys ['extra']"),
    (lambda c: c.update(variants=[]), "non-empty list of objects"),
    (lambda c: c.update(seeds=[1, -2]), "\"seeds\" must be a non-empty list of integers >= 0"),
    (lambda c: c["variants"].append({"name": "baseline"}), "variant name 'baseline' appears twice"),
    (lambda c: c["variants"].append({"name": "bad name"}), "variant 2 has name 'bad name'"),
    (lambda c: c["base"].update(weight_decy=1), "['weight_decy'] are neither trainer settings"),
    (lambda c: c["base"].update(data_dir="{work}/{nope}"), "uses {nope}, which is not a setting"),
    (lambda c: c["variants"][0].update(seed=3), "sets ['seed'], which the runner sets itself"),
    (lambda c: c["base"].update(steps=-1), "\"steps\" must be an integer >= 1"),
    (lambda c: c["base"].pop("model"), "\"model\" (a create_model.py configuration name"),
])
def test_config_errors(tmp_path, edit, needle):
    cfg = scratch_experiment(tmp_path, edit)
    with pytest.raises(UserError) as e:
        runner.main([str(cfg), "--dry-run", "--work-dir", str(tmp_path / "work")])
    assert needle in str(e.value), str(e.value)


def test_only_unknown_variant_and_bad_json(tmp_path):
    cfg = scratch_experiment(tmp_path)
    with pytest.raises(UserError, match="--only nope: no such variant"):
        runner.main([str(cfg), "--only", "nope", "--dry-run"])
    (tmp_path / "bad.json").write_text("{not json")
    r = run_module(tmp_path / "bad.json")
    assert r.returncode == 1 and "is not valid JSON" in r.stderr and "Traceback" not in r.stderr


def test_threads_per_run(tmp_path):
    """--threads sets each CPU run's --threads (default cores/jobs with --jobs > 1); below 1 is refused."""
    def planned(*extra):
        r = run_module(CONFIG, "--dry-run", "--work-dir", tmp_path / "work", "--trainer", "cpu", *extra)
        assert r.returncode == 0, r.stderr
        return [ln for ln in r.stdout.splitlines() if "train_gpt2" in ln and "--steps" in ln]
    one = planned("--jobs", "2", "--threads", "1")
    assert one and all(ln.endswith("--threads 1") or "--threads 1 " in ln for ln in one), one[:2]
    three = planned("--threads", "3")
    assert three and all("--threads 3" in ln for ln in three), three[:2]
    r = run_module(CONFIG, "--dry-run", "--threads", "0", "--trainer", "cpu")
    assert r.returncode == 1 and "--threads 0 must be >= 1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name,runs", [("faithful.json", 80), ("faithful-ablations.json", 25),
                                       ("faithful-fraction.json", 30), ("faithful-stability.json", 20)])
def test_dry_run_of_the_faithful_configs(tmp_path, name, runs):
    """Every config of issue 12's runs plans its runs (trainer flags that exist, templates that resolve)
    without writing anything."""
    before = sorted(os.listdir(EXP))
    r = run_module(os.path.join(EXP, name), "--dry-run", "--work-dir", tmp_path / "work", "--trainer", "cpu")
    assert r.returncode == 0, r.stderr
    assert f"= {runs} runs" in r.stdout, r.stdout[:2000]
    assert sorted(os.listdir(EXP)) == before and not (tmp_path / "work").exists()


def test_dry_run_of_the_experiment_config(tmp_path):
    before = sorted(os.listdir(EXP))
    r = run_module(CONFIG, "--dry-run", "--work-dir", tmp_path / "work", "--trainer", "cpu")
    assert r.returncode == 0, r.stderr
    assert "9 variant(s) x 3 seed(s) = 27 runs" in r.stdout
    listed = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("[")]
    assert len(listed) == 27, listed
    assert sorted(os.listdir(EXP)) == before, "a dry run wrote into the experiment folder"
    assert not (tmp_path / "work").exists(), "a dry run created the work folder"
    # the trainer command of every run (whatever its status), from the runner's own planning
    cfg = runner.load_config(CONFIG)
    runs, _, _ = runner.plan_runs(cfg, CONFIG, {v["name"] for v in cfg["variants"]}, cfg["seeds"],
                                  str(tmp_path / "work"))
    cmds = {}
    for run in runs:
        run.model_path = str(tmp_path / "model.bin")
        cmds[run.name] = " ".join(runner.trainer_argv(run, "./train_gpt2", 0))
    assert len(cmds) == 27 and cfg["seeds"] == [1, 2, 3]
    base = cmds["baseline/seed1"]
    for flag in ("--batch-size 512", "--lr 0.001", "--lr-schedule constant", "--warmup 10",
                 "--beta1 0.9", "--beta2 0.98", "--weight-decay 1.0", "--seed 1", "--grad-clip 0",
                 "--val-every 100", "--val-batches -1", "--steps 20000"):
        assert flag in base, f"baseline lacks {flag}: {base}"
    assert runs[0].settings["model"] == "mod97" and "--dropout" not in base
    expect = {"no-wd/seed2": "--weight-decay 0", "wd-to-init/seed1": "--decay-toward-init 1",
              "dropout-0.1/seed1": "--dropout 0.1", "noise-0.01/seed3": "--weight-noise 0.01",
              "frac-0.3/seed1": "data/frac0.3/train.bin", "frac-0.7/seed1": "data/frac0.7/val.bin",
              "lr-3e-4/seed1": "--lr 0.0003", "lr-3e-3/seed2": "--lr 0.003"}
    for name, flag in expect.items():
        assert flag in cmds[name], f"{name} lacks {flag}: {cmds[name]}"


def test_smoke_config_end_to_end(tmp_path, trainer_built):
    cfg = scratch_experiment(tmp_path)
    exp, work = cfg.parent, tmp_path / "work"
    r = run_module(cfg, "--work-dir", work, "--trainer", "cpu", "--no-build")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wd = {}
    for variant in ("baseline", "no-wd"):
        log = read_log(exp / "runs-smoke" / variant / "seed1" / "log.jsonl")
        assert log.complete and log.last_step == 20, f"{variant}: last step {log.last_step}"
        assert log.series("val_acc")[0].tolist() == [10, 20]
        assert log.series("train_acc")[0].tolist() == list(range(1, 21))
        wd[variant] = log.config["weight-decay"]
        assert log.config["batch-size"] == 64 and log.config["seed"] == 1
        rec = json.loads((exp / "runs-smoke" / variant / "seed1" / "run.json").read_text())
        assert rec["status"] == "complete" and rec["returncode"] == 0
        assert len([f for f in os.listdir(work / variant / "seed1") if f.startswith("state_")]) == 1
    assert wd == {"baseline": 1, "no-wd": 0}, wd
    for name in ("loss.png", "accuracy.png", "baseline_accuracy.png", "no-wd_loss.png"):
        check_png(exp / "figures-smoke" / name)
    results = (exp / "results-smoke.md").read_text()
    assert "| baseline | 1/1 | 20 |" in results and "| no-wd | 1/1 | 20 |" in results
    assert "steps to 99% val acc" in r.stdout
    logs_before = {v: (exp / "runs-smoke" / v / "seed1" / "log.jsonl").read_bytes()
                   for v in ("baseline", "no-wd")}
    r = run_module(cfg, "--work-dir", work, "--trainer", "cpu", "--no-build")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 run(s) already complete, skipped" in r.stdout
    for v, data in logs_before.items():
        assert (exp / "runs-smoke" / v / "seed1" / "log.jsonl").read_bytes() == data
    # running a part of the config (--only, --seeds) keeps the whole record in the table and figures
    before = {p: p.read_bytes() for p in [exp / "results-smoke.md", *(exp / "figures-smoke").iterdir()]}
    for part in (["--only", "no-wd"], ["--only", "no-wd", "--plots-only"], ["--seeds", "1"]):
        r = run_module(cfg, "--work-dir", work, "--trainer", "cpu", "--no-build", *part)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "| baseline | 1/1 | 20 |" in (exp / "results-smoke.md").read_text(), part
        assert {p: p.read_bytes() for p in before} == before, part


def test_resume_after_interrupt(tmp_path, trainer_built):
    """Ctrl-C during a run (SIGINT, exit 130), then the same command resumes it to the end. The
    interrupt must come after the first checkpoint and before the end; on a busy machine this test
    can be descheduled long enough for a short run to finish first, so it then tries again with a
    run four times longer (the precondition, not the result, is what the retry waits for)."""
    for steps in (200, 800, 3200):
        def longer(c, steps=steps):
            c["base"].update(steps=steps, batch_size=128, save_every=20, val_every=100)
            c["variants"] = [{"name": "baseline"}]
        attempt = tmp_path / f"steps{steps}"
        attempt.mkdir()
        cfg = scratch_experiment(attempt, longer)
        exp, work = cfg.parent, attempt / "work"
        argv = [sys.executable, "-m", "dev.run", str(cfg), "--work-dir", str(work), "--trainer", "cpu",
                "--no-build"]
        # SIGINT back to its default in the child: a shell starts background jobs (`bash dev/test.sh &`)
        # with SIGINT ignored, Python then keeps it ignored, and the runner could not be interrupted
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        run_dir = work / "baseline" / "seed1"
        deadline = time.time() + 120
        while time.time() < deadline and not runner.checkpoint_steps(str(run_dir)):
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        log_path = run_dir / "log.jsonl"
        if proc.returncode == 0 and log_path.exists() and read_log(log_path).last_step == steps:
            continue  # finished before the interrupt arrived: try a longer run
        break
    assert proc.returncode == 130, f"runner was not interrupted (rc {proc.returncode}):\n{out[-2000:]}"
    first = read_log(run_dir / "log.jsonl")
    assert 20 <= first.last_step < steps, f"interrupted at step {first.last_step}"
    r = run_module(cfg, "--work-dir", work, "--trainer", "cpu", "--no-build")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resume: baseline/seed1 from" in r.stdout, r.stdout[-2000:]
    log = read_log(exp / "runs-smoke" / "baseline" / "seed1" / "log.jsonl")
    assert log.complete and sorted(log.records) == list(range(1, steps + 1))
    assert len(log.headers) == 2 and "resume" in log.headers[1]
    assert runner.checkpoint_steps(str(run_dir)) == [steps]


def test_unknown_trainer_flag_fails_clearly(tmp_path, trainer_built, monkeypatch):
    monkeypatch.setitem(runner.TRAINER_FLAGS, "bogus_setting", "--bogus-setting")

    def add_variant(c):
        c["variants"].append({"name": "bogus", "bogus_setting": 1})
    cfg = scratch_experiment(tmp_path, add_variant)
    exp, work = cfg.parent, tmp_path / "work"
    # 1. up front: the flag is not in the trainer's --help
    rc = runner.main([str(cfg), "--work-dir", str(work), "--trainer", "cpu", "--no-build"])
    assert rc == 1
    assert not (exp / "runs-smoke" / "bogus").exists()
    assert read_log(exp / "runs-smoke" / "no-wd" / "seed1" / "log.jsonl").complete
    # 2. at run time: the --help check bypassed, the trainer's own error is explained
    monkeypatch.setattr(runner, "trainer_flags", lambda trainer: {"bogus-setting"} | {
        f[2:] for f in runner.TRAINER_FLAGS.values()})
    rc = runner.main([str(cfg), "--work-dir", str(work), "--trainer", "cpu", "--no-build",
                      "--only", "bogus"])
    assert rc == 1
    rec = json.loads((exp / "runs-smoke" / "bogus" / "seed1" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["returncode"] != 0
    assert "the trainer rejected --bogus-setting (config key bogus_setting)" in rec["error"], rec["error"]
