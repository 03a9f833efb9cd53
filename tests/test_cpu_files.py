"""What the CPU trainer leaves on disk when things go wrong: nothing half-written, nothing stale,
and no two runs in one folder.

What it checks:
  - Disk full while saving: with the file-size limit of the trainer's process (RLIMIT_FSIZE, and
    SIGXFSZ ignored, so a write fails with EFBIG as it fails with ENOSPC on a full disk) a save
    fails: exit 1 with a message naming the file being written, no `*.tmp.<pid>` file left, and
    the checkpoint saved before it unchanged.
  - Temporary files of a killed trainer (model_/state_/log.jsonl `.tmp.<pid>` with a process
    that no longer exists) are removed when a trainer starts in that folder, with a warning; the
    temporary file of a process that is alive is left alone.
  - Two trainers with the same -o: the second refuses with a message naming the folder and the
    process that holds it (DIR/train.lock, flock), and the first one's log stays intact.
Run: python -m pytest -q tests/test_cpu_files.py
"""

import json
import os
import resource
import signal
import subprocess
import time

import numpy as np

from dev.configs import NAMED_CONFIGS
from dev.shards import write_token_shard
from helpers import make_checkpoint, REPO, run_trainer, trainer

CONFIG = NAMED_CONFIGS["tiny"]


def setup(d):
    make_checkpoint(d / "model.bin", CONFIG, seed=0, scale=0.05)
    rng = np.random.default_rng(0)
    write_token_shard(d / "train.bin", rng.integers(0, CONFIG.vocab_size, 3000))
    return ["--model", d / "model.bin", "-i", d / "train.bin", "-j", "", "-b", 2, "-t", 32, "-v", 0, "-s", 0]


def dead_pid():
    """The pid of a process that has ended (and was reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_disk_full_names_the_file_and_leaves_no_temporary_file(tmp_path):
    args = setup(tmp_path)
    out = tmp_path / "run"
    run_trainer(*args, "--steps", 1, "-o", out)
    before = (out / "model_000001.bin").read_bytes()
    limit = len(before) // 2  # the log fits, a checkpoint does not

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # resume for one more step: its save of model_000002.bin fails halfway
    r = subprocess.run([trainer(), *map(str, args), "--resume", str(out / "state_000001.bin"), "--steps", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    assert f"error: writing {out}/model_000002.bin failed" in r.stderr, r.stderr
    assert "File too large" in r.stderr and "free some disk space" in r.stderr, r.stderr
    assert not list(out.glob("*.tmp.*")), sorted(p.name for p in out.iterdir())
    assert not (out / "model_000002.bin").exists()
    assert (out / "model_000001.bin").read_bytes() == before


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    args = setup(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    gone = dead_pid()
    stale = [out / f"model_000005.bin.tmp.{gone}", out / f"state_000005.bin.tmp.{gone}",
             out / f"log.jsonl.tmp.{gone}"]
    alive = out / f"model_000007.bin.tmp.{os.getpid()}"  # this test's own process: alive
    other = out / f"notes.tmp.{gone}"                     # not a name a trainer writes
    for p in stale + [alive, other]:
        p.write_bytes(b"partial")
    r = run_trainer(*args, "--steps", 1, "-o", out)
    for p in stale:
        assert not p.exists(), f"{p.name} should have been removed"
        assert f"removed {p}" in r.stderr and f"process {gone}" in r.stderr, r.stderr
    assert alive.exists() and other.exists()


def test_second_trainer_in_the_same_folder_refuses(tmp_path):
    args = setup(tmp_path)
    out = tmp_path / "run"
    first = subprocess.Popen([trainer(), *map(str, args), "--steps", "100000", "-o", str(out)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "log.jsonl").exists() or (out / "log.jsonl").stat().st_size == 0:
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first trainer did not start"
            time.sleep(0.05)
        r = run_trainer(*args, "--steps", 2, "-o", out, check=False)
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr
        assert f"output folder {out} is in use by another trainer (process {first.pid}" in r.stderr, r.stderr
        assert "train.lock" in r.stderr
        assert first.poll() is None, "the first trainer must keep running"
    finally:
        first.kill()
        first.wait()
    records = [json.loads(line) for line in open(out / "log.jsonl")]  # every line parses
    assert "config" in records[0] and all(r.get("step", 1) >= 1 for r in records[1:])
    # the lock goes with the process, even killed: the folder can be resumed into again
    run_trainer(*args, "--steps", 1, "-o", out)
