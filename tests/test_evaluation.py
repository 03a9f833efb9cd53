"""Evaluation during training (llmc/train_driver.h): more evaluation sets, the log-spaced
schedule, per-tensor parameter norms. On the CPU trainer; the driver is the CUDA trainer's too.

What it checks:
  - --eval-sets "name=glob,...": each set is evaluated whole, with the clean model, whenever -j
    is; a set that is the validation file itself gives exactly val_loss and val_acc (-m -1); the
    validation set cut in two (by row) gives accuracies whose count-weighted mean is val_acc and
    losses whose weighted mean is val_loss (to float rounding); the log holds them under "eval".
  - --val-schedule log with -v 1: evaluations at every step to 99, then every 10 (100, 110, 120),
    and the last step; --val-schedule every keeps every -v steps.
  - "param_norms" (the 16 tensors) at each evaluation equal numpy's norms of the checkpoint saved
    at that step (float64, to 1e-6 relative), their root sum of squares equals the logged
    param_norm, and "param_norm_without_ln_gains" leaves out ln1w, ln2w and lnfw.
  - malformed --eval-sets values and a set of another kind than -i exit 1 with a message naming
    the value.
Run: python -m pytest -q tests/test_evaluation.py
"""

import numpy as np
import pytest

from dev.checkpoint import PARAM_NAMES, read_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.shards import read_example_shard, write_example_shard
from helpers import assert_clear_error, example_data, make_checkpoint, read_log, run_trainer, token_data

CONFIG = NAMED_CONFIGS["tiny"]


def train(tmp_path, *extra, steps=6):
    make_checkpoint(tmp_path / "model.bin", CONFIG, seed=1, scale=0.05)
    data = example_data(tmp_path, CONFIG)
    out = tmp_path / "run"
    run_trainer("--model", tmp_path / "model.bin", *data, "-o", out, "--steps", steps, "-l", 3e-3,
                "-s", 0, "-m", -1, "--save-every", 3, *extra)
    return [r for r in read_log(out / "log.jsonl") if "step" in r and "train_loss" in r]


def test_eval_sets_agree_with_validation(tmp_path):
    # the validation file cut in two by row: the first 6 examples and the other 7
    tokens, mask, V = read_example_shard_parts(tmp_path)
    records = train(tmp_path, "-v", 3, "--eval-sets",
                    f"same={tmp_path / 'val.bin'},first={tmp_path / 'first.bin'},rest={tmp_path / 'rest.bin'}")
    evaluated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [3, 6]
    for r in evaluated:
        e = r["eval"]
        assert e["same"]["loss"] == r["val_loss"] and e["same"]["acc"] == r["val_acc"]
        # accuracy: counts of examples; loss: scored positions (1 or 2 per example, see example_data)
        n1, n2 = 6, 7
        acc = (e["first"]["acc"] * n1 + e["rest"]["acc"] * n2) / (n1 + n2)
        assert abs(acc - r["val_acc"]) < 1e-6
        s1, s2 = int(mask[:n1].sum()), int(mask[n1:].sum())
        loss = (e["first"]["loss"] * s1 + e["rest"]["loss"] * s2) / (s1 + s2)
        assert abs(loss - r["val_loss"]) < 1e-5 * abs(r["val_loss"])


def read_example_shard_parts(tmp_path):
    example_data(tmp_path, CONFIG)  # writes train.bin and val.bin
    tokens, mask, V = read_example_shard(tmp_path / "val.bin")
    write_example_shard(tmp_path / "first.bin", tokens[:6], mask[:6], V)
    write_example_shard(tmp_path / "rest.bin", tokens[6:], mask[6:], V)
    return tokens, mask[:, 1:], V


def test_log_spaced_schedule(tmp_path):
    records = train(tmp_path, "-v", 1, "--val-schedule", "log", steps=125)
    steps = [r["step"] for r in records if "val_loss" in r]
    assert steps == list(range(1, 100)) + [100, 110, 120, 125]
    (tmp_path / "every").mkdir()
    records = train(tmp_path / "every", "-v", 4, steps=10)
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8, 10]


def test_parameter_norms_match_the_checkpoint(tmp_path):
    records = train(tmp_path, "-v", 3)
    for r in (r for r in records if "param_norms" in r):
        _, params = read_checkpoint(tmp_path / "run" / f"model_{r['step']:06d}.bin")
        norms = r["param_norms"]
        assert list(norms) == list(PARAM_NAMES)
        for name in PARAM_NAMES:
            want = float(np.linalg.norm(params[name].astype(np.float64)))
            assert abs(norms[name] - want) <= 1e-6 * want + 1e-12, name
        total = np.sqrt(sum(v * v for v in norms.values()))
        assert abs(total - r["param_norm"]) <= 1e-6 * total
        gains = ("ln1w", "ln2w", "lnfw")
        rest = np.sqrt(sum(v * v for k, v in norms.items() if k not in gains))
        assert abs(rest - r["param_norm_without_ln_gains"]) <= 1e-6 * rest


@pytest.mark.parametrize("value, fragment", [
    ("noequals", "is not name=glob"),
    ("=x.bin", "is not name=glob"),
    ("bad name=x.bin", "may hold only letters"),
    ("a=VAL,a=VAL", "twice"),
    ("a=VAL,,b=VAL", "empty"),
    ("tok=TOK", "another kind"),
])
def test_bad_eval_sets(tmp_path, value, fragment):
    make_checkpoint(tmp_path / "model.bin", CONFIG, seed=1)
    data = example_data(tmp_path, CONFIG)
    token_dir = tmp_path / "tok"
    token_dir.mkdir()
    token_args = token_data(token_dir, CONFIG)
    value = value.replace("VAL", str(tmp_path / "val.bin")).replace("TOK", str(token_args[3]))
    r = run_trainer("--model", tmp_path / "model.bin", *data, "--steps", 2, "-v", 1, "-s", 0,
                    "--eval-sets", value, check=False)
    assert_clear_error(r, value, [fragment])
