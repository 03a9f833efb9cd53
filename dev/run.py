"""Experiment runner: one command runs every variant x seed of an experiment config and draws its figures.

Contract: `python -m dev.run experiments/NNNNN-name/config.json [--only V]
[--seeds 1 2] [--dry-run]` reads the config (format: see CONFIG_HELP below,
also printed by --help), then
  1. prepares the data: runs each distinct `prepare` command once (skipped when
     it already ran with the same command and the data files exist);
  2. builds the trainer: `make train_gpt2fp32cu` when `nvidia-smi -L` lists a
     GPU, else `make train_gpt2` (--trainer cpu|cuda forces one, --no-build
     uses the binary as it is) and checks that the trainer's --help lists
     every flag the runs need (a run needing a missing flag fails up front,
     naming the flag, the config key and the variant);
  3. creates one model per (model settings, seed): `create_model.py --config
     <model> <model_args> --seed <seed>`;
  4. trains every variant x seed with progress bars (runs, and steps read live
     from the logs); the trainer's output goes to <work>/<variant>/seed<k>/
     output.txt, its log and checkpoints to that folder (older checkpoint
     pairs are pruned, the newest kept for resuming);
  5. copies each log beside the config, to <exp>/runs<tag>/<variant>/seed<k>/
     log.jsonl with run.json (the resolved settings, command and outcome);
  6. draws the figures into <exp>/figures<tag>/ (all variants, and each
     variant alone) and prints the results table (steps to 99% train and
     validation accuracy, mean ± std and range over seeds), also written to
     <exp>/results<tag>.md. Figures and table always cover every variant and
     seed of the config (complete runs so far), also when --only or --seeds
     ran a part of it.
<tag> is "" for config.json and "-<stem>" for any other file name (smoke.json
-> runs-smoke/), so several configs can share an experiment folder. <work>
defaults to out/experiments/<exp name>/<stem> (git-ignored).
Resume-friendly: a run whose copied log is complete (reached its steps, no
divergence) and whose run.json holds the same settings is skipped; an
unfinished run continues from its newest state file (--resume) when its
settings are unchanged. A failed run does not stop the others; the runner
exits 1 at the end and names each failure. Bad configs print `error: ...`.
"""

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time

import numpy as np

from dev.errors import UserError, cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# config key -> trainer flag: the one table between experiment configs and the
# trainers' command line (llmc/train_config.h; the README's "Command line").
TRAINER_FLAGS = {
    "train_data": "--train-data",
    "val_data": "--val-data",
    "tokenizer": "--tokenizer",
    "batch_size": "--batch-size",
    "seq_len": "--seq-len",
    "steps": "--steps",
    "lr": "--lr",
    "lr_schedule": "--lr-schedule",
    "warmup": "--warmup",
    "min_lr_frac": "--min-lr-frac",
    "weight_decay": "--weight-decay",
    "decay_params": "--decay-params",
    "beta1": "--beta1",
    "beta2": "--beta2",
    "eps": "--eps",
    "grad_clip": "--grad-clip",
    "val_every": "--val-every",
    "val_schedule": "--val-schedule",
    "eval_sets": "--eval-sets",
    "val_batches": "--val-batches",
    "sample_every": "--sample-every",
    "gen_tokens": "--gen-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "save_every": "--save-every",
    "threads": "--threads",
    "classifier_rows": "--classifier-rows",
    # research regularizers (README "Regularizers")
    "dropout": "--dropout",
    "decay_toward_init": "--decay-toward-init",
    "weight_noise": "--weight-noise",
}
# keys the runner itself reads
RUNNER_KEYS = ("model", "model_args", "prepare", "notes", "description")
# set by the runner for every run; a config may not set them
RESERVED_KEYS = ("seed", "variant", "work", "exp_dir", "repo", "model_file", "output_dir", "resume")
ACC_THRESHOLD = 0.99
TARGETS = {"cpu": ("train_gpt2", "train_gpt2"), "cuda": ("train_gpt2fp32cu", "train_gpt2fp32cu")}

CONFIG_HELP = """\
config format (JSON):
  {
    "name": "00010-delayed-generalization",    optional, default: the folder name
    "seeds": [1, 2, 3],                        model init + data order (--seed)
    "base": { settings shared by every run },
    "variants": [ {"name": "baseline"}, {"name": "no-wd", "weight_decay": 0}, ... ]
  }
Each run's settings are "base" updated with its variant's keys. A setting is:
  - a trainer flag, through this table (value null = do not pass the flag):
      %s
  - "model": create_model.py --config name (e.g. "mod97"); "model_args": more
    create_model.py flags as a list (e.g. ["--n-embd", "32"]);
  - "prepare": the data command (a string or a list), run from the repository
    root with PYTHONPATH set to it; "python" means this interpreter;
  - "notes" / "description": free text, ignored;
  - any other key is a variable for templates and must be used by one.
String values are templates: {key} is replaced by that setting's value, and
{seed}, {variant}, {work} (the work folder), {exp_dir} (the config's folder)
and {repo} are provided ({{ and }} are literal braces). Paths are relative to
the repository root. The runner passes -e (the created model), -o (the run's
work folder) and --seed itself; "steps" must be set (>= 1).

example:
  {"seeds": [1, 2],
   "base": {"model": "mod97", "train_fraction": 0.5,
            "data_dir": "{work}/data/frac{train_fraction}",
            "prepare": "python -m dev.mod_arith --train-fraction {train_fraction} --out-dir {data_dir}",
            "train_data": "{data_dir}/train.bin", "val_data": "{data_dir}/val.bin",
            "steps": 20000, "batch_size": 512, "lr": 0.001, "lr_schedule": "constant",
            "warmup": 10, "beta2": 0.98, "weight_decay": 1.0, "val_every": 100, "val_batches": -1},
   "variants": [{"name": "baseline"}, {"name": "no-wd", "weight_decay": 0},
                {"name": "frac-0.3", "train_fraction": 0.3}]}
""" % "\n      ".join(
    ", ".join(f"{k} {v}" for k, v in list(TRAINER_FLAGS.items())[i:i + 3])
    for i in range(0, len(TRAINER_FLAGS), 3))


# ---- config -----------------------------------------------------------------------------
class Run:
    """One variant x seed: its resolved settings and every path it uses."""

    def __init__(self, variant, seed, raw, settings, runs_dir, work):
        self.variant, self.seed, self.settings = variant, seed, settings
        self.raw = raw  # base + variant before templates: what decides whether a log is current
        self.log_dir = os.path.join(runs_dir, variant, f"seed{seed}")
        self.work_dir = os.path.join(work, variant, f"seed{seed}")
        self.model_path = None
        self.status = None       # "complete", "stale", "resume", "todo"
        self.resume_from = None
        self.argv = None
        self.error = None

    @property
    def name(self):
        return f"{self.variant}/seed{self.seed}"

    @property
    def steps(self):
        return int(self.settings["steps"])


def load_config(path):
    if not os.path.isfile(path):
        raise UserError(f"config {path}: no such file. Pass an experiment config such as "
                        f"experiments/00010-delayed-generalization/config.json.")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"config {path} is not valid JSON: {e}. Fix the file (see --help for the "
                        f"format).") from e
    if not isinstance(cfg, dict):
        raise UserError(f"config {path}: expected a JSON object with base, variants and seeds.")
    unknown = sorted(set(cfg) - {"name", "description", "notes", "seeds", "base", "variants"})
    if unknown:
        raise UserError(f"config {path}: unknown top-level keys {unknown}; expected name, "
                        f"description, notes, seeds, base, variants (see --help).")
    base, variants, seeds = cfg.get("base"), cfg.get("variants"), cfg.get("seeds")
    if not isinstance(base, dict):
        raise UserError(f"config {path}: \"base\" must be an object of settings (see --help).")
    if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
        raise UserError(f"config {path}: \"variants\" must be a non-empty list of objects, each "
                        f"with a \"name\" (e.g. [{{\"name\": \"baseline\"}}]).")
    if (not isinstance(seeds, list) or not seeds or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise UserError(f"config {path}: \"seeds\" must be a non-empty list of integers >= 0, "
                        f"got {seeds!r}.")
    names = []
    for i, v in enumerate(variants):
        name = v.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise UserError(f"config {path}: variant {i} has name {name!r}; use letters, digits, "
                            f". _ - (it becomes a folder name).")
        if name in names:
            raise UserError(f"config {path}: variant name {name!r} appears twice.")
        names.append(name)
    for where, d in [("base", base)] + [(f"variant {v['name']!r}", v) for v in variants]:
        bad = [k for k in d if k in RESERVED_KEYS]
        if bad:
            raise UserError(f"config {path}: {where} sets {bad}, which the runner sets itself "
                            f"(the model file, output folder and seed).")
    return cfg


def _template_fields(value):
    try:
        return [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as e:
        raise UserError(f"bad template {value!r}: {e} (write {{{{ and }}}} for literal braces).") from e


def _fmt(value):
    """A setting value as a template substitution / command-line string."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def resolve_settings(merged, provided, where):
    """Fill {key} templates in string values (and list items) until none is left."""
    values = dict(merged)
    values.update(provided)
    used = set()

    def render(s):
        for field in _template_fields(s):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field or ""):
                raise UserError(f"{where}: template {s!r} has field {{{field}}}; only plain names "
                                f"like {{data_dir}} are allowed.")
            if field not in values:
                raise UserError(f"{where}: template {s!r} uses {{{field}}}, which is not a "
                                f"setting; define \"{field}\" in base or the variant.")
            used.add(field)
        return s.format_map({k: _fmt(v) for k, v in values.items()})

    for _ in range(10):
        changed = False
        for k, v in list(values.items()):
            if k in provided:
                continue
            if isinstance(v, str):
                new = render(v)
            elif isinstance(v, list):
                new = [render(x) if isinstance(x, str) else x for x in v]
            else:
                continue
            if new != v:
                values[k] = new
                changed = True
        if not changed:
            break
    else:
        raise UserError(f"{where}: templates still unresolved after 10 passes (a cycle?).")
    out = {k: values[k] for k in merged}
    return out, used


def check_settings(settings, used, where):
    unknown = [k for k in settings if k not in TRAINER_FLAGS and k not in RUNNER_KEYS and k not in used]
    if unknown:
        raise UserError(f"{where}: {unknown} are neither trainer settings ({', '.join(TRAINER_FLAGS)}) "
                        f"nor runner settings ({', '.join(RUNNER_KEYS)}) nor used by a template: a typo?")
    if "model" not in settings or not isinstance(settings["model"], str):
        raise UserError(f"{where}: \"model\" (a create_model.py configuration name such as mod97) "
                        f"is required.")
    steps = settings.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UserError(f"{where}: \"steps\" must be an integer >= 1, got {steps!r}.")
    args = settings.get("model_args", [])
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise UserError(f"{where}: \"model_args\" must be a list of create_model.py arguments, "
                        f"e.g. [\"--n-embd\", \"32\"].")
    for k, v in settings.items():
        if k in TRAINER_FLAGS and v is not None and not isinstance(v, (str, int, float, bool)):
            raise UserError(f"{where}: {k} = {v!r} must be a number, a string, true/false or null.")
    if "prepare" in settings and not isinstance(settings["prepare"], (str, list)):
        raise UserError(f"{where}: \"prepare\" must be a command string or a list of arguments.")


def rel(path):
    """`path` relative to the repository root when it is inside it (stable across clones)."""
    ap = os.path.abspath(path)
    return os.path.relpath(ap, REPO) if ap == REPO or ap.startswith(REPO + os.sep) else ap


def plan_runs(cfg, config_path, variants, seeds, work):
    """Resolve every selected variant x seed into a Run (no side effects)."""
    exp_dir = os.path.dirname(os.path.abspath(config_path))
    stem = os.path.splitext(os.path.basename(config_path))[0]
    tag = "" if stem == "config" else f"-{stem}"
    runs_dir = os.path.join(exp_dir, f"runs{tag}")
    runs = []
    for v in cfg["variants"]:
        if v["name"] not in variants:
            continue
        merged = dict(cfg["base"])
        merged.update({k: val for k, val in v.items() if k != "name"})
        for seed in seeds:
            where = f"config {config_path}, variant {v['name']!r}"
            provided = {"seed": seed, "variant": v["name"], "work": rel(work),
                        "exp_dir": rel(exp_dir), "repo": "."}
            settings, used = resolve_settings(merged, provided, where)
            check_settings(settings, used, where)
            runs.append(Run(v["name"], seed, merged, settings, runs_dir, work))
    return runs, exp_dir, tag


# ---- commands ---------------------------------------------------------------------------
def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def command_argv(cmd):
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def model_key(settings):
    spec = json.dumps([settings["model"], [str(a) for a in settings.get("model_args", [])]])
    return settings["model"] + "-" + hashlib.sha1(spec.encode()).hexdigest()[:8]


def trainer_argv(run, trainer, threads):
    argv = [trainer]
    if run.resume_from:
        argv += ["--resume", rel(run.resume_from)]
    else:
        argv += ["--model", rel(run.model_path)]
    argv += ["--output-dir", rel(run.work_dir), "--seed", str(run.seed)]
    for key, flag in TRAINER_FLAGS.items():
        value = run.settings.get(key)
        if value is None:
            continue
        if key == "threads":
            continue
        argv += [flag, _fmt(value)]
    t = run.settings.get("threads")
    if t is not None or threads:
        argv += ["--threads", _fmt(t if t is not None else threads)]
    return argv


def detect_gpu():
    """(True, description) when nvidia-smi lists a GPU."""
    if shutil.which("nvidia-smi") is None:
        return False, "no nvidia-smi"
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"nvidia-smi failed ({e})"
    gpus = [ln for ln in r.stdout.splitlines() if ln.startswith("GPU ")]
    if r.returncode != 0 or not gpus:
        return False, "nvidia-smi lists no GPU"
    return True, gpus[0]


def trainer_flags(trainer):
    """Every --long-flag the trainer's --help lists."""
    try:
        r = subprocess.run([trainer, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
    except OSError as e:
        raise UserError(f"cannot run the trainer {trainer} ({e}); build it with make.") from e
    return set(re.findall(r"--([a-z0-9][a-z0-9-]*)", r.stdout + r.stderr))


# ---- results ----------------------------------------------------------------------------
def read_run_log(run):
    from dev.logs import read_log
    path = os.path.join(run.log_dir, "log.jsonl")
    return read_log(path) if os.path.exists(path) else None


def run_record(run):
    path = os.path.join(run.log_dir, "run.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def same_settings(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def stats_text(values, n_total):
    """'mean ± std (min-max), k/n' over the seeds that reached the target."""
    if not values:
        return f"not reached (0/{n_total})"
    a = np.asarray(values, dtype=np.float64)
    if len(a) == 1:
        text = f"{a[0]:.0f}"
    else:
        text = f"{a.mean():.0f} ± {a.std(ddof=1):.0f} ({a.min():.0f}-{a.max():.0f})"
    return f"{text}, {len(a)}/{n_total}"


def duration_text(seconds):
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def summarize(runs):
    """Markdown results table lines: per variant, over its seeds' logs."""
    from dev.logs import first_step_reaching
    rows, meta = [], {}
    variants = list(dict.fromkeys(r.variant for r in runs))
    for variant in variants:
        vr = [r for r in runs if r.variant == variant]
        logs = [(r, read_run_log(r)) for r in vr]
        logs = [(r, lg) for r, lg in logs if lg is not None and lg.records]
        n = len(vr)
        train_hits, val_hits, final_val, times, done = [], [], [], [], 0
        for r, lg in logs:
            done += lg.complete
            s = first_step_reaching(*lg.series("train_acc"), ACC_THRESHOLD)
            if s is not None:
                train_hits.append(s)
            s = first_step_reaching(*lg.series("val_acc"), ACC_THRESHOLD)
            if s is not None:
                val_hits.append(s)
            steps, vals = lg.series("val_acc")
            if len(vals):
                final_val.append(vals[-1])
            if not math.isnan(lg.elapsed_s()):
                times.append(lg.elapsed_s())
            meta.setdefault("hardware", lg.header.get("hardware"))
            meta.setdefault("trainer", lg.header.get("trainer"))
            meta.setdefault("commit", lg.header.get("commit"))
        budget = vr[0].steps
        rows.append((variant, f"{done}/{n}", budget, stats_text(train_hits, n), stats_text(val_hits, n),
                     f"{np.mean(final_val):.4f}" if final_val else "-",
                     duration_text(np.mean(times)) if times else "-"))
    header = ("variant", "runs complete", "step budget", f"steps to {ACC_THRESHOLD:.0%} train acc",
              f"steps to {ACC_THRESHOLD:.0%} val acc", "final val acc (mean)", "training time per run (mean)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    notes = [f"Steps to {ACC_THRESHOLD:.0%}: the first step whose logged accuracy (train: the "
             f"step's batch; val: the whole validation set) is >= {ACC_THRESHOLD}; mean ± sample "
             f"std (min-max) over the seeds that reached it, and how many did."]
    if meta:
        notes.append(f"Hardware: {meta.get('hardware')}; trainer {meta.get('trainer')}; "
                     f"commit {meta.get('commit')} (from the first log).")
    return lines, notes


# ---- the main flow ----------------------------------------------------------------------
class LiveLog:
    """Follows a log file as a trainer appends to it; returns the newest step seen."""

    def __init__(self, path):
        self.path, self.offset, self.buf, self.step = path, 0, b"", 0

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # rewritten (a resume trims it)
                    self.offset, self.buf = 0, b""
                f.seek(self.offset)
                data = f.read()
                self.offset += len(data)
        except OSError:
            return self.step
        lines = (self.buf + data).split(b"\n")
        self.buf = lines.pop()
        for ln in lines:
            try:
                rec = json.loads(ln)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and "train_loss" in rec:
                self.step = max(self.step, rec["step"])
        return self.step


CKPT_RE = re.compile(r"(model|state)_(\d+)\.bin$")


def checkpoint_steps(work_dir):
    """Steps that have both model_NNNNNN.bin and state_NNNNNN.bin in work_dir, ascending."""
    found = {}
    for p in glob.glob(os.path.join(work_dir, "*_*.bin")):
        m = CKPT_RE.search(os.path.basename(p))
        if m:
            found.setdefault(int(m.group(2)), set()).add(m.group(1))
    return sorted(s for s, kinds in found.items() if kinds == {"model", "state"})


def prune_checkpoints(work_dir):
    """Delete every checkpoint pair older than the newest complete pair."""
    steps = checkpoint_steps(work_dir)
    for s in steps[:-1]:
        for kind in ("model", "state"):
            try:
                os.remove(os.path.join(work_dir, f"{kind}_{s:06d}.bin"))
            except OSError:
                pass


def clear_checkpoints(work_dir):
    for p in glob.glob(os.path.join(work_dir, "*_*.bin")):
        if CKPT_RE.search(os.path.basename(p)):
            os.remove(p)


def write_json_atomic(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def copy_atomic(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp.{os.getpid()}"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def classify(run, rerun):
    """Set run.status: complete (skip), resume, or todo (fresh)."""
    log, rec = read_run_log(run), run_record(run)
    if (not rerun and log is not None and log.complete and log.total_steps == run.steps and
            rec is not None and same_settings(rec.get("config"), run.raw)):
        run.status = "complete"
        return
    work_rec_path = os.path.join(run.work_dir, "run.json")
    work_rec = None
    if os.path.exists(work_rec_path):
        try:
            with open(work_rec_path) as f:
                work_rec = json.load(f)
        except (OSError, json.JSONDecodeError):
            work_rec = None
    steps = checkpoint_steps(run.work_dir)
    if (not rerun and steps and work_rec is not None and
            same_settings(work_rec.get("config"), run.raw) and steps[-1] < run.steps):
        run.status = "resume"
        run.resume_from = os.path.join(run.work_dir, f"state_{steps[-1]:06d}.bin")
        return
    run.status = "stale" if log is not None else "todo"


def print_failure(run):
    print(f"FAILED {run.name}: {run.error}", file=sys.stderr)


def explain_failure(run, rc, output_path):
    try:
        with open(output_path, errors="replace") as f:
            tail = f.read()[-3000:].strip().splitlines()[-12:]
    except OSError:
        tail = []
    text = "\n".join(tail)
    m = re.search(r"unknown flag '(--[a-z0-9-]+)'", text)
    if m:
        keys = [k for k, v in TRAINER_FLAGS.items() if v == m.group(1)]
        return (f"the trainer rejected {m.group(1)} (config key {keys[0] if keys else '?'}); it "
                f"does not support that setting yet. Trainer output ({output_path}):\n{text}")
    return f"the trainer exited with status {rc}. Last lines of {output_path}:\n{text}"


def execute(runs, trainer, jobs, threads):
    """Run every run whose status is todo/stale/resume; jobs at a time. Returns failures."""
    from tqdm import tqdm
    pending = [r for r in runs if r.status in ("todo", "stale", "resume")]
    if not pending:
        return []
    total_steps = sum(r.steps - (int(CKPT_RE.search(r.resume_from).group(2)) if r.resume_from else 0)
                      for r in pending)
    bar_runs = tqdm(total=len(pending), desc="runs", unit="run", position=0)
    bar_steps = tqdm(total=total_steps, desc="steps", unit="step", position=1, smoothing=0.05)
    failures, active, queue = [], [], list(pending)
    try:
        while queue or active:
            while queue and len(active) < jobs:
                run = queue.pop(0)
                os.makedirs(run.work_dir, exist_ok=True)
                if run.status != "resume":
                    clear_checkpoints(run.work_dir)
                run.argv = trainer_argv(run, trainer, threads)
                write_json_atomic(os.path.join(run.work_dir, "run.json"),
                                  {"config": run.raw, "settings": run.settings, "command": run.argv})
                out_path = os.path.join(run.work_dir, "output.txt")
                out = open(out_path, "a" if run.status == "resume" else "w")
                out.write("$ " + " ".join(shlex.quote(a) for a in run.argv) + "\n")
                out.flush()
                live = LiveLog(os.path.join(run.work_dir, "log.jsonl"))
                start_step = live.poll() if run.status == "resume" else 0
                proc = subprocess.Popen(run.argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                        env=subprocess_env())
                active.append({"run": run, "proc": proc, "out": out, "out_path": out_path,
                               "live": live, "shown": start_step, "t0": time.time()})
                bar_runs.set_postfix_str(run.name)
            time.sleep(0.5)
            for a in list(active):
                step = a["live"].poll()
                if step > a["shown"]:
                    bar_steps.update(step - a["shown"])
                    a["shown"] = step
                prune_checkpoints(a["run"].work_dir)
                rc = a["proc"].poll()
                if rc is None:
                    continue
                active.remove(a)
                a["out"].close()
                run = a["run"]
                step = a["live"].poll()
                if step > a["shown"]:
                    bar_steps.update(step - a["shown"])
                prune_checkpoints(run.work_dir)
                finish_run(run, rc, a["out_path"], time.time() - a["t0"])
                if run.error:
                    failures.append(run)
                    bar_steps.total -= max(0, run.steps - step)
                    tqdm.write(f"FAILED {run.name}: {run.error.splitlines()[0]}", file=sys.stderr)
                bar_runs.update(1)
    except KeyboardInterrupt:
        for a in active:
            a["proc"].terminate()
        raise
    finally:
        bar_steps.close()
        bar_runs.close()
    return failures


def finish_run(run, rc, out_path, wall_s):
    """Copy the log beside the config and write run.json with the outcome."""
    src = os.path.join(run.work_dir, "log.jsonl")
    dst = os.path.join(run.log_dir, "log.jsonl")
    if os.path.exists(src):
        copy_atomic(src, dst)
    log = read_run_log(run) if os.path.exists(dst) else None
    if rc == 0 and log is not None and log.complete:
        status = "complete"
    else:
        status = "failed"
        if rc == 0:
            why = "diverged" if log is not None and log.error else "its log did not reach the last step"
            run.error = f"the trainer exited 0 but {why} ({dst})."
        else:
            run.error = explain_failure(run, rc, out_path)
    write_json_atomic(os.path.join(run.log_dir, "run.json"), {
        "variant": run.variant, "seed": run.seed, "status": status, "returncode": rc,
        "config": run.raw, "settings": run.settings, "command": run.argv, "wall_s": round(wall_s, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "error": run.error})


def draw_figures(runs, exp_dir, tag, title):
    from dev.plot import plot_runs
    fig_dir = os.path.join(exp_dir, f"figures{tag}")
    logs, labels = [], []
    for r in runs:
        lg = read_run_log(r)
        if lg is not None and lg.records:
            logs.append(lg)
            labels.append(r.variant)
    if not logs:
        return []
    written = plot_runs(logs, labels, fig_dir, title=title)
    for variant in dict.fromkeys(labels):
        sel = [lg for lg, lab in zip(logs, labels) if lab == variant]
        written += plot_runs(sel, [variant] * len(sel), fig_dir, prefix=f"{variant}_",
                             title=f"{title}: {variant}")
    return written


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m dev.run",
        description="Run an experiment: prepare data, build the trainer, create a model per seed, "
                    "train every variant x seed, keep the logs beside the config, draw the "
                    "figures and print the results table.",
        epilog=CONFIG_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="experiment config, e.g. experiments/00010-delayed-generalization/config.json")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="run only this variant (repeat, or comma-separate, for several)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the config's seeds")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (status and command of every run); run nothing")
    p.add_argument("--plots-only", action="store_true",
                   help="only redraw the figures and the table from the logs already there")
    p.add_argument("--rerun", action="store_true", help="run again even the runs that are complete")
    p.add_argument("--trainer", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when nvidia-smi lists a GPU, else CPU (default: auto)")
    p.add_argument("--no-build", action="store_true", help="do not run make; use the trainer binary as it is")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (default 1); on CPU each gets cores/jobs threads unless the "
                        "config sets threads")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per run on CPU (default: cores/jobs when --jobs > 1, else the "
                        "trainer's default); a config's threads wins. Results do not depend on it, "
                        "so two runners side by side can each use --threads 1")
    p.add_argument("--work-dir", default=None,
                   help="folder for data, models, checkpoints and trainer output (default: "
                        "out/experiments/<name>/<config stem>)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if hasattr(signal, "SIGPIPE") and argv is None:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --dry-run | head` ends quietly
    cfg = load_config(args.config)
    exp_dir = os.path.dirname(os.path.abspath(args.config))
    name = cfg.get("name") or os.path.basename(exp_dir)
    stem = os.path.splitext(os.path.basename(args.config))[0]
    work = os.path.abspath(args.work_dir or os.path.join(REPO, "out", "experiments", name, stem))
    all_variants = [v["name"] for v in cfg["variants"]]
    wanted = all_variants
    if args.only:
        wanted = [x for item in args.only for x in item.split(",") if x]
        unknown = [v for v in wanted if v not in all_variants]
        if unknown:
            raise UserError(f"--only {', '.join(unknown)}: no such variant in {args.config}; it has "
                            f"{', '.join(all_variants)}.")
    seeds = args.seeds if args.seeds is not None else cfg["seeds"]
    if any(s < 0 for s in seeds):
        raise UserError(f"--seeds {seeds}: seeds must be >= 0.")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be >= 1.")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads} must be >= 1.")
    runs, exp_dir, tag = plan_runs(cfg, args.config, set(wanted), seeds, work)
    title = name
    print(f"experiment {name}: {len(wanted)} variant(s) x {len(seeds)} seed(s) = {len(runs)} runs")
    print(f"config {rel(args.config)}; logs -> {rel(os.path.join(exp_dir, 'runs' + tag))}; "
          f"work folder {rel(work)}")

    # the table and figures are the experiment's record: every variant and every seed of the config
    # (and any extra --seeds), whatever --only / --seeds selected to run now
    record, _, _ = plan_runs(cfg, args.config, set(all_variants), sorted(set(cfg["seeds"]) | set(seeds)), work)
    if args.plots_only:
        return report(record, exp_dir, tag, title, failures=[])

    for r in runs:
        classify(r, args.rerun)

    # models: one per (model settings, seed)
    models = {}
    for r in runs:
        key = (model_key(r.settings), r.seed)
        models.setdefault(key, (r.settings, os.path.join(work, "models", f"{key[0]}-seed{r.seed}.bin")))
        r.model_path = models[key][1]

    # trainer
    if args.trainer == "auto":
        has_gpu, gpu_text = detect_gpu()
        kind = "cuda" if has_gpu else "cpu"
        print(f"trainer: {'CUDA' if has_gpu else 'CPU'} ({gpu_text})")
    else:
        kind = args.trainer
        print(f"trainer: {kind} (forced by --trainer)")
    target, binary = TARGETS[kind]
    trainer = os.path.join(".", binary)
    threads = 0
    if kind == "cpu" and args.threads is not None:
        threads = args.threads
    elif kind == "cpu" and args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)

    todo = [r for r in runs if r.status != "complete"]
    prepares = {}
    for r in todo:
        if "prepare" in r.settings:
            prepares.setdefault(json.dumps(command_argv(r.settings["prepare"])), r)

    if args.dry_run:
        print("\ndry run: nothing is executed. The plan:")
        for key, r in prepares.items():
            print(f"  prepare: {' '.join(shlex.quote(a) for a in json.loads(key))}")
        if todo:
            print(f"  build:   {'(skipped: --no-build)' if args.no_build else 'make ' + target}")
        for (mkey, seed), (settings, path) in models.items():
            if any(r.model_path == path for r in todo):
                print(f"  model:   {' '.join(create_model_argv(settings, seed, path))}")
        for r in runs:
            print(f"  [{r.status}] {r.name}")
            if r.status != "complete":
                print("           " + " ".join(shlex.quote(a) for a in trainer_argv(r, trainer, threads)))
        return 0

    done = [r for r in runs if r.status == "complete"]
    if done:
        print(f"{len(done)} run(s) already complete, skipped: {', '.join(r.name for r in done)}")
    for r in todo:
        if r.status == "resume":
            print(f"resume: {r.name} from {rel(r.resume_from)}")
        elif r.status == "stale":
            print(f"rerun: {r.name} (its log is incomplete, or the config changed since it ran)")
    failures = []
    if todo:
        for key, r in prepares.items():
            prepare_data(json.loads(key), r, work)
        if not args.no_build:
            print(f"build: make {target}")
            res = subprocess.run(["make", target], cwd=REPO)
            if res.returncode != 0:
                raise UserError(f"`make {target}` failed (status {res.returncode}); fix the build "
                                f"(see its output above) or use --trainer / --no-build.")
        if not os.access(os.path.join(REPO, binary), os.X_OK):
            raise UserError(f"trainer {trainer} does not exist; build it with `make {target}`.")
        accepted = trainer_flags(trainer)
        for r in todo:
            missing = [(k, TRAINER_FLAGS[k]) for k in TRAINER_FLAGS
                       if r.settings.get(k) is not None and TRAINER_FLAGS[k][2:] not in accepted]
            if missing:
                r.error = (f"the trainer {trainer} does not accept " +
                           ", ".join(f"{flag} (config key {k})" for k, flag in missing) +
                           f" (not in its --help): it does not support that setting yet.")
                r.status = "failed"
                failures.append(r)
                print_failure(r)
        for (mkey, seed), (settings, path) in models.items():
            if any(r.model_path == path and r.status in ("todo", "stale") for r in todo):
                if not os.path.exists(path):
                    argv = create_model_argv(settings, seed, path)
                    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                                         env=subprocess_env())
                    if res.returncode != 0:
                        raise UserError(f"creating the model failed: {' '.join(argv)}\n{res.stderr.strip()}")
                    print(f"model: {rel(path)} ({settings['model']} {' '.join(map(str, settings.get('model_args', [])))} seed {seed})")
        failures += execute(todo, trainer, args.jobs, threads)
    return report(record, exp_dir, tag, title, failures)


def create_model_argv(settings, seed, path):
    return [sys.executable, "create_model.py", "--config", settings["model"],
            *[str(a) for a in settings.get("model_args", [])], "--seed", str(seed), "--out", rel(path)]


def prepare_data(argv, run, work):
    stamp = os.path.join(work, "prepared", hashlib.sha1(json.dumps(argv).encode()).hexdigest()[:16] + ".json")
    outputs = [run.settings.get(k) for k in ("train_data", "val_data") if run.settings.get(k)]
    have = all(glob.glob(os.path.join(REPO, o)) or glob.glob(o) for o in outputs)
    if os.path.exists(stamp) and have:
        print(f"data: up to date ({' '.join(shlex.quote(a) for a in argv[1:])})")
        return
    print(f"data: {' '.join(shlex.quote(a) for a in argv)}")
    res = subprocess.run(argv, cwd=REPO, env=subprocess_env())
    if res.returncode != 0:
        raise UserError(f"the data command failed (status {res.returncode}): "
                        f"{' '.join(shlex.quote(a) for a in argv)}")
    write_json_atomic(stamp, {"command": argv})


def report(runs, exp_dir, tag, title, failures):
    written = draw_figures(runs, exp_dir, tag, title)
    for p in written:
        print(f"figure: {rel(p)}")
    lines, notes = summarize(runs)
    text = "\n".join(lines)
    print("\n" + text + "\n")
    for n in notes:
        print(n)
    results = os.path.join(exp_dir, f"results{tag}.md")
    tmp = f"{results}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"# Results: {title}\n\nWritten by `python -m dev.run` from the logs in "
                f"runs{tag}/.\n\n{text}\n\n" + "\n\n".join(notes) + "\n")
    os.replace(tmp, results)
    print(f"results: {rel(results)}")
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for r in failures:
            print_failure(r)
        return 1
    return 0


def cli():
    """The console command `gpt2-run` (pyproject.toml): the same as `python -m dev.run`."""
    cli_main(main)


if __name__ == "__main__":
    cli()
