"""Read the trainers' JSONL logs (DIR/log.jsonl) into arrays.

Log format (written by llmc/logger.h; one JSON object per line):
  header records (no "step" key): {"config": {...every flag, model sizes,
      total_steps, data_kind...}, "commit", "hardware", "trainer"}; a resumed
      run appends another header that also holds {"resume": {"state", "from_step"}}
  step records: {"step", "train_loss", "train_acc" (null unless example data),
      "val_loss", "val_acc" (only on evaluated steps), "lr", "grad_norm",
      "param_norm", "tokens_per_s", "elapsed_s"}
  sample records: {"step", "sample"}
  error records: {"step", "error", ...} when training diverged
Unknown keys are ignored; JSON null (the trainers write NaN/inf as null)
becomes NaN.

Contract: read_log(path) -> RunLog. A last line cut short (a crash while
writing) is dropped and flagged (`truncated`); any other line that is not a
JSON object raises LogError (a UserError) naming the file and line. A step
logged twice keeps its last record. RunLog.series(key) returns (steps,
values) float arrays of the step records where `key` is a number (not null).
"""

import dataclasses
import json
import math
import os

import numpy as np

from dev.errors import UserError

STEP_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "grad_norm", "param_norm",
             "tokens_per_s", "elapsed_s")


class LogError(UserError):
    """A training log is missing or malformed."""


@dataclasses.dataclass
class RunLog:
    path: str
    headers: list          # every header record, in file order (the first is the run's start)
    records: dict          # step -> step record (last one wins)
    samples: list          # (step, text) in file order
    error: dict = None     # the error record when the run diverged
    truncated: bool = False

    @property
    def header(self):
        return self.headers[0] if self.headers else {}

    @property
    def config(self):
        """The first header's "config" object ({} if absent)."""
        return self.header.get("config", {}) or {}

    @property
    def total_steps(self):
        """Steps the run was asked for (config total_steps, else the steps flag), or None."""
        for h in reversed(self.headers):  # a resumed run may have raised --steps
            cfg = h.get("config", {}) or {}
            for key in ("total_steps", "steps"):
                v = cfg.get(key)
                if isinstance(v, int) and v > 0:
                    return v
        return None

    @property
    def last_step(self):
        return max(self.records) if self.records else 0

    @property
    def complete(self):
        """True when the log reached its total_steps and the run did not diverge."""
        total = self.total_steps
        return self.error is None and total is not None and self.last_step >= total

    def series(self, key):
        """(steps, values) as float64 arrays over step records whose `key` is a number (not null/NaN)."""
        steps, values = [], []
        for step in sorted(self.records):
            v = self.records[step].get(key)
            if v is None or isinstance(v, (str, bool, list, dict)) or math.isnan(v):
                continue
            steps.append(step)
            values.append(float(v))
        return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)

    def has(self, key):
        return len(self.series(key)[0]) > 0

    def elapsed_s(self):
        """Wall time of the run from its last record's elapsed_s (NaN when absent)."""
        steps, values = self.series("elapsed_s")
        return float(values[-1]) if len(values) else math.nan


def _nulls_to_nan(record):
    return {k: (math.nan if v is None and k in STEP_KEYS else v) for k, v in record.items()}


def read_log(path):
    """Parse a JSONL training log (see module docstring)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LogError(f"log {path}: no such file. Logs are written by the trainers as "
                       f"<output dir>/log.jsonl when run with -o DIR.")
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    if ends_with_newline:
        lines = lines[:-1]
    log = RunLog(path=path, headers=[], records={}, samples=[])
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = i == len(lines)
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            if last and not ends_with_newline:
                log.truncated = True  # the writer was killed mid-line
                break
            raise LogError(f"log {path} line {i} is not a JSON object ({e}): "
                           f"{raw[:80].decode('utf-8', 'replace')!r}. Was it written by a trainer?")
        if "step" not in rec:
            log.headers.append(rec)
            continue
        step = rec["step"]
        if not isinstance(step, int) or isinstance(step, bool):
            raise LogError(f"log {path} line {i}: step {step!r} is not an integer.")
        if "error" in rec:
            log.error = rec
        elif "sample" in rec:
            log.samples.append((step, rec["sample"]))
        else:
            log.records[step] = _nulls_to_nan(rec)
    if not log.headers and not log.records:
        raise LogError(f"log {path} holds no records (empty file?).")
    return log


def first_step_reaching(steps, values, threshold):
    """The first step whose value is >= threshold (NaN never counts), or None."""
    hit = np.nonzero(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf) >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None
