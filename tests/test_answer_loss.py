"""Answer-only loss and exact-match accuracy on a hand-built batch whose right values are known.

The model: every tensor random except the final LayerNorm's weight, which is zero. Then the final
LayerNorm outputs its bias b at every position, whatever the input, so every position has the same
logits l = wte[:V] @ b and the loss of a scored target y is logsumexp(l) - l[y], exactly; the
prediction at every position is a = argmax(l). The data: example shards (E = 8) whose scored
targets are chosen by hand, some equal to a and some not, one example with two scored targets
(right and wrong: it must count as wrong), one with two right ones.
What it checks, for the CPU trainer and the CUDA trainer (gpu, and emu in the CPU emulator):
one step at lr 0 (the weights do not move) over a training batch holding every example, and
validation over the whole validation set, log
  train_loss = val_loss = the mean of logsumexp(l) - l[y] over the scored targets only (the
               unscored positions' targets are arbitrary and must not count), within 1e-5 relative;
  train_acc, val_acc = the fraction of examples whose every scored target is a (exact, to the
               log's 9 printed digits).
Run: python -m pytest -q tests/test_answer_loss.py
"""

import dataclasses

import numpy as np
import pytest

from dev.checkpoint import write_checkpoint
from dev.configs import NAMED_CONFIGS
from dev.shards import write_example_shard
from helpers import BACKENDS, cuda_trainer, random_params, read_log, run_trainer, step_records

CONFIG = dataclasses.replace(NAMED_CONFIGS["mod97"], n_embd=32, n_head=2)
E = 8


def hand_built(tmp_path):
    params = random_params(CONFIG, seed=21, scale=0.5)
    params["lnfw"][:] = 0.0
    write_checkpoint(tmp_path / "model.bin", CONFIG, params)
    V = CONFIG.vocab_size
    logits = params["wte"][:V].astype(np.float64) @ params["lnfb"].astype(np.float64)
    a = int(np.argmax(logits))
    lse = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
    rng = np.random.default_rng(3)
    wrong = [v for v in range(V) if v != a]

    def examples(answers):
        """One example per list of scored targets (placed at positions 4, 5, ...)."""
        tokens = rng.integers(0, V, (len(answers), E))
        mask = np.zeros((len(answers), E), dtype=np.uint8)
        for i, ans in enumerate(answers):
            for j, y in enumerate(ans):
                tokens[i, 4 + j] = y
                mask[i, 4 + j] = 1
        return tokens, mask

    def expected(answers):
        ys = [y for ans in answers for y in ans]
        loss = float(np.mean([lse - logits[y] for y in ys]))
        acc = float(np.mean([all(y == a for y in ans) for ans in answers]))
        return loss, acc

    train_answers = [[a], [wrong[0]], [a], [a, wrong[5]], [wrong[9]], [a, a]]  # 3 of 6 right
    val_answers = [[a], [wrong[1]], [wrong[2]], [wrong[3]], [a, a], [wrong[4], a], [a]]  # 3 of 7
    for name, answers in (("train.bin", train_answers), ("val.bin", val_answers)):
        write_example_shard(tmp_path / name, *examples(answers), V)
    return expected(train_answers), expected(val_answers), len(train_answers)


@pytest.mark.parametrize("trainer", ["cpu"] + [f"cuda-{b}" for b in BACKENDS])
def test_answer_only_loss_and_accuracy(tmp_path, trainer):
    binary, extra = None, []
    if trainer != "cpu":
        binary, extra = cuda_trainer(trainer.split("-")[1]), ["--tf32", 0]
    (train_loss, train_acc), (val_loss, val_acc), n_train = hand_built(tmp_path)
    assert 0 < train_acc < 1 and 0 < val_acc < 1
    out = tmp_path / "run"
    run_trainer("--model", tmp_path / "model.bin", "-i", tmp_path / "train.bin", "-j", tmp_path / "val.bin",
                "-o", out, "-b", n_train, "--steps", 1, "-l", 0.0, "-v", 1, "-m", -1, "-s", 0, *extra,
                binary=binary)
    rec = step_records(read_log(out / "log.jsonl"))[0]
    for key, want in (("train_loss", train_loss), ("val_loss", val_loss)):
        assert abs(rec[key] - want) <= 1e-5 * want, f"{key} {rec[key]:.9g}, by hand {want:.9g} ({trainer})"
    # the log prints %.9g: 3/7 comes back as 0.428571429
    assert abs(rec["train_acc"] - train_acc) < 1e-9 and abs(rec["val_acc"] - val_acc) < 1e-9, \
        f"accuracy train {rec['train_acc']} val {rec['val_acc']}, by hand {train_acc} and {val_acc} ({trainer})"
