"""A seeded mutation fuzz test of every file format the trainers read, against the sanitized build.

What it checks: valid small files of each format (model checkpoint, training state, token shard,
example shard, tokenizer, parity batch, LoRA adapter) are mutated, and ./train_gpt2_asan (AddressSanitizer +
UBSan, any finding fatal) runs on each mutant. Every run must end in one of two ways:
  - exit 1 with an `error: ...` line (the mutant is refused with a message), or
  - exit 0 (the mutant is still a valid file, e.g. a flipped bit in a weight), with any model it
    saved (and any adapter file) holding only finite values;
never a signal, a sanitizer report, a timeout, another exit status, or exit 1 without a message.
Mutations: 1-8 flipped bits (half of them in the header), truncation at a random length (0 and
inside the header included), a header slot set to 0, -1, 1, 2^30, INT_MAX, INT_MIN or INT_MAX - k,
pairs of header slots whose product overflows 32 or 64 bits (for the model the known wrapping
header C = 2^30, NH = 1, V = Vp = 128, L = 165191041, maxT = 2147483633), appended bytes, body
floats set to NaN, inf, -inf, 3e38 or a negative value (the AdamW second moment v of a state must
be >= 0), and token ids set to V or 65535.
Budget: FUZZ_MUTANTS (default 720, spread evenly over the formats) runs take about 30 s on 2 cores
(each sanitized run of the tiny model takes ~50 ms); the by-hand long run is
  FUZZ_MUTANTS=6000 python -m pytest -q -s tests/test_fuzz_formats.py
which prints the per-format counts of refused / accepted / rejected mutants (-s shows them; they
are printed in every run). FUZZ_SEED (default 20261202) picks another set; FUZZ_ONLY=format:index
runs one mutant, and the failure message names each failing mutant that way, with its mutation,
command and the end of its stderr, so it reproduces with
  FUZZ_SEED=<seed> FUZZ_ONLY=<format>:<index> python -m pytest -q -s tests/test_fuzz_formats.py
Run: python -m pytest -q tests/test_fuzz_formats.py
"""

import concurrent.futures
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from dev.checkpoint import ModelConfig, read_checkpoint, write_checkpoint
from dev.init import gpt2_init
from dev.lora import read_adapter
from dev.parity_files import write_parity_batch
from dev.shards import write_example_shard, write_token_shard
from dev.tokenizer import write_tokenizer_file
from helpers import asan_trainer

CONFIG = ModelConfig(max_seq_len=16, vocab_size=100, n_layer=1, n_head=2, n_embd=16)
FORMATS = ("model", "state", "token_shard", "example_shard", "tokenizer", "parity_batch", "adapter")
MUTANTS = int(os.environ.get("FUZZ_MUTANTS", "720"))
SEED = int(os.environ.get("FUZZ_SEED", "20261202"))
TIMEOUT_S = 30
# Leaks are not checked here: an error exits at once (exit(1) frees nothing on purpose), and the
# successful runs' leak checks are tests/test_cpu_sanitizers.py's.
SANITIZER_ENV = {"ASAN_OPTIONS": "exitcode=86:detect_leaks=0", "UBSAN_OPTIONS": "exitcode=87:print_stacktrace=1"}
SANITIZER_TEXT = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "SUMMARY:", "UndefinedBehavior")
INT_MAX, INT_MIN = 2 ** 31 - 1, -2 ** 31


# ---- the valid files ----------------------------------------------------------------------------

def make_valid_files(d, binary):
    """Write one valid file of each format into d (and a trained run for the state)."""
    write_checkpoint(d / "model.bin", CONFIG, gpt2_init(CONFIG, seed=0))
    rng = np.random.default_rng(0)
    write_token_shard(d / "train.bin", rng.integers(0, CONFIG.vocab_size, 400))
    write_token_shard(d / "val.bin", rng.integers(0, CONFIG.vocab_size, 200))
    E = 8
    mask = np.zeros((12, E), dtype=np.uint8)
    mask[:, 5:] = 1
    write_example_shard(d / "examples.bin", rng.integers(0, CONFIG.vocab_size, (12, E)), mask, CONFIG.vocab_size)
    pieces = [bytes([97 + i % 26]) * (1 + i % 3) for i in range(CONFIG.vocab_size)]
    write_tokenizer_file(d / "tokenizer.bin", pieces, eot_id=CONFIG.vocab_size - 1)
    write_parity_batch(d / "batch.bin", rng.integers(0, CONFIG.vocab_size, (2, 8)),
                       rng.integers(0, CONFIG.vocab_size, (2, 8)), (rng.random((2, 8)) < 0.5).astype(np.int32))
    r = subprocess.run([binary, *base_train_args(d), "--steps", "1", "-o", str(d / "run"), "--decay-toward-init", "1"],
                       capture_output=True, text=True, timeout=TIMEOUT_S, env=dict(os.environ, **SANITIZER_ENV))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([binary, *base_train_args(d), "--steps", "1", "-o", str(d / "lora"), "--lora-rank", "2",
                        "--lora-targets", "qkvw,fcprojw"], capture_output=True, text=True, timeout=TIMEOUT_S,
                       env=dict(os.environ, **SANITIZER_ENV))
    assert r.returncode == 0, r.stderr
    return {"model": d / "model.bin", "state": d / "run" / "state_000001.bin", "token_shard": d / "train.bin",
            "example_shard": d / "examples.bin", "tokenizer": d / "tokenizer.bin", "parity_batch": d / "batch.bin",
            "adapter": d / "lora" / "adapter_000001.bin"}


def base_train_args(d):
    return ["--model", str(d / "model.bin"), "-i", str(d / "train.bin"), "-j", str(d / "val.bin"), "-b", "2",
            "-t", "8", "-v", "1", "-m", "1", "-s", "0", "--threads", "1"]


def command(fmt, d, mutant, out):
    """The trainer arguments that make it read `mutant` as a file of format fmt."""
    base = base_train_args(d)
    if fmt == "model":
        return ["--model", mutant] + base[2:] + ["--steps", "1", "-o", out]
    if fmt == "token_shard":
        return base[:2] + ["-i", mutant] + base[4:] + ["--steps", "1", "-o", out]
    if fmt == "example_shard":
        return ["--model", str(d / "model.bin"), "-i", mutant, "-j", mutant, "-b", "4", "-v", "1", "-m", "2",
                "-s", "0", "--threads", "1", "--steps", "1", "-o", out]
    if fmt == "tokenizer":
        return base[:-4] + ["-s", "1", "-g", "4", "--tokenizer", mutant, "--steps", "1", "-o", out]
    if fmt == "parity_batch":
        return ["--model", str(d / "model.bin"), "--parity-batch", mutant, "--parity-out", os.path.join(out, "g.bin")]
    if fmt == "adapter":
        return ["--model", str(d / "model.bin"), "--lora-adapter", mutant] + base[2:] + ["--steps", "1", "-o", out]
    if fmt == "state":  # the mutant replaces the state file of a copy of the run, beside its model
        return ["--resume", mutant, "-i", str(d / "train.bin"), "-j", str(d / "val.bin"), "-v", "1", "-m", "1",
                "-s", "0", "--threads", "1", "--steps", "2", "--decay-toward-init", "1"]
    raise KeyError(fmt)


# ---- mutations ------------------------------------------------------------------------------------

# Header slots worth aiming at, per format (the rest of the header is reserved zeros).
HEADER_SLOTS = {"model": range(0, 11), "state": range(0, 29), "token_shard": range(0, 3),
                "example_shard": range(0, 5), "tokenizer": range(0, 4), "parity_batch": range(0, 5),
                "adapter": range(0, 10)}
# (slot, slot) pairs whose product sizes the body
SIZE_PAIRS = {"model": [(4, 6), (2, 6), (3, 6)], "state": [(4, 5), (6, 7)], "token_shard": [(2, 2)],
              "example_shard": [(2, 3)], "tokenizer": [(2, 2)], "parity_batch": [(2, 3)], "adapter": [(2, 6), (5, 6)]}
SPECIAL_INTS = [0, -1, 1, 2 ** 30, INT_MAX, INT_MIN, INT_MAX - 1, INT_MAX - 7, 65536, 65537]
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 3e38, -3e38, -1.0, -1e-30]


def mutate(fmt, raw, rng):
    """(description, mutated bytes) of one random mutation of `raw`, a valid file of format fmt."""
    raw = bytearray(raw)
    kind = rng.choice(["bitflip", "truncate", "slot", "pair", "append", "float", "token"])
    if kind == "float" and fmt not in ("model", "state", "adapter"):
        kind = "token" if fmt in ("token_shard", "example_shard", "parity_batch") else "slot"
    if kind == "token" and fmt not in ("token_shard", "example_shard", "parity_batch"):
        kind = "bitflip"
    if kind == "bitflip":
        n = int(rng.integers(1, 9))
        limit = 64 if rng.random() < 0.5 else len(raw)
        bits = [int(rng.integers(0, limit * 8)) for _ in range(n)]
        for b in bits:
            raw[b // 8] ^= 1 << (b % 8)
        return f"flip bits {bits}", bytes(raw)
    if kind == "truncate":
        n = int(rng.choice([0, int(rng.integers(0, 1024)), int(rng.integers(0, len(raw)))]))
        return f"truncate to {n} bytes", bytes(raw[:n])
    header = np.frombuffer(bytes(raw[:1024]), dtype="<i4").copy()
    if kind == "slot":
        slot = int(rng.choice(list(HEADER_SLOTS[fmt])))
        value = int(rng.choice(SPECIAL_INTS))
        header[slot] = value
        raw[:1024] = header.tobytes()
        return f"header[{slot}] = {value}", bytes(raw)
    if kind == "pair":
        if fmt == "model" and rng.random() < 0.3:
            # the parameter count of this header wraps 2^64 to exactly 0, so a header-only file has
            # the "right" size for a reader that multiplies without overflow checks
            header[2:9] = [2147483633, 128, 165191041, 1, 2 ** 30, 128, 0]
            return "model header whose parameter count wraps 64-bit arithmetic to 0", header.tobytes()
        a, b = SIZE_PAIRS[fmt][int(rng.integers(0, len(SIZE_PAIRS[fmt])))]
        va, vb = int(rng.choice([2 ** 16, 2 ** 20, 2 ** 30, INT_MAX])), int(rng.choice([2 ** 16, 2 ** 21, INT_MAX]))
        header[a], header[b] = va, vb
        raw[:1024] = header.tobytes()
        return f"header[{a}] = {va}, header[{b}] = {vb}", bytes(raw)
    if kind == "append":
        extra = rng.integers(0, 256, int(rng.choice([1, 3, 4, 64, 4096]))).astype(np.uint8).tobytes()
        return f"append {len(extra)} random bytes", bytes(raw) + extra
    body = len(raw) - 1024
    if kind == "float":
        floats = np.frombuffer(bytes(raw[1024:1024 + body // 4 * 4]), dtype="<f4").copy()
        if fmt == "state" and rng.random() < 0.5:  # aim at v, the second half of m|v(|init)
            P = int(np.frombuffer(bytes(raw[16:20]), dtype="<u4")[0])
            at = P + int(rng.integers(0, P))
        else:
            at = int(rng.integers(0, len(floats)))
        value = float(rng.choice(SPECIAL_FLOATS))
        floats[at] = value
        raw[1024:1024 + floats.nbytes] = floats.tobytes()
        return f"body float {at} = {value}", bytes(raw)
    # token ids >= V
    if fmt == "parity_batch":
        ints = np.frombuffer(bytes(raw[1024:]), dtype="<i4").copy()
        at = int(rng.integers(0, len(ints)))
        ints[at] = int(rng.choice([CONFIG.vocab_size, 65535, -1, INT_MAX]))
        raw[1024:] = ints.tobytes()
        return f"batch int {at} = {ints[at]}", bytes(raw)
    n_tokens = body // 2 if fmt == "token_shard" else int(header[2]) * int(header[3])
    toks = np.frombuffer(bytes(raw[1024:1024 + 2 * n_tokens]), dtype="<u2").copy()
    at = int(rng.integers(0, len(toks)))
    toks[at] = int(rng.choice([CONFIG.vocab_size, 65535]))
    raw[1024:1024 + toks.nbytes] = toks.tobytes()
    return f"token {at} = {toks[at]}", bytes(raw)


def mutant_rng(fmt, index):
    return np.random.default_rng([SEED, FORMATS.index(fmt), index])


# ---- running --------------------------------------------------------------------------------------

def run_mutant(binary, d, valid, fmt, index):
    """Returns (verdict, detail): verdict "refused" | "accepted" | "REJECTED"."""
    what, data = mutate(fmt, valid[fmt].read_bytes(), mutant_rng(fmt, index))
    work = tempfile.mkdtemp(prefix=f"{fmt}_{index}_", dir=d)
    out = os.path.join(work, "out")
    if fmt == "state":
        run = os.path.join(work, "run")
        shutil.copytree(d / "run", run)
        mutant = os.path.join(run, "state_000001.bin")
    else:
        mutant = os.path.join(work, "mutant.bin")
    with open(mutant, "wb") as f:
        f.write(data)
    args = command(fmt, d, mutant, out)
    try:
        r = subprocess.run([binary, *args], capture_output=True, timeout=TIMEOUT_S,
                           env=dict(os.environ, **SANITIZER_ENV))
    except subprocess.TimeoutExpired:
        return "REJECTED", (what, args, f"timeout after {TIMEOUT_S} s")
    err = r.stderr.decode("utf-8", errors="replace")
    problem = None
    if any(s in err for s in SANITIZER_TEXT):
        problem = "sanitizer report"
    elif r.returncode < 0:
        problem = f"killed by signal {-r.returncode}"
    elif r.returncode == 1 and not any(line.startswith("error: ") for line in err.splitlines()):
        problem = "exit 1 without an 'error:' line"
    elif r.returncode not in (0, 1):
        problem = f"exit status {r.returncode}"
    elif r.returncode == 0:
        saved = [os.path.join(dp, f) for dp, _, fs in os.walk(work) for f in fs if f.startswith("model_")]
        for path in saved:
            _, params = read_checkpoint(path)  # raises on a non-finite value
            if not all(np.isfinite(p).all() for p in params.values()):
                problem = f"exit 0 but {path} holds a non-finite value"
        for path in [os.path.join(dp, f) for dp, _, fs in os.walk(work) for f in fs if f.startswith("adapter_")]:
            read_adapter(path)  # raises on a non-finite value
    shutil.rmtree(work, ignore_errors=True)
    if problem:
        return "REJECTED", (what, args, f"{problem}; exit {r.returncode}; stderr ends:\n{err[-1500:]}")
    return ("refused" if r.returncode == 1 else "accepted"), None


def test_every_mutant_is_refused_cleanly_or_accepted(tmp_path):
    binary = asan_trainer()
    valid = make_valid_files(tmp_path, binary)
    only = os.environ.get("FUZZ_ONLY")
    if only:
        fmt, index = only.split(":")
        jobs = [(fmt, int(index))]
    else:
        per = max(1, MUTANTS // len(FORMATS))
        jobs = [(fmt, i) for fmt in FORMATS for i in range(per)]
    counts = {fmt: {"refused": 0, "accepted": 0, "REJECTED": 0} for fmt in FORMATS}
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {pool.submit(run_mutant, binary, tmp_path, valid, fmt, i): (fmt, i) for fmt, i in jobs}
        for fut in concurrent.futures.as_completed(futures):
            fmt, i = futures[fut]
            verdict, detail = fut.result()
            counts[fmt][verdict] += 1
            if detail:
                failures.append((fmt, i, *detail))
    print(f"\nfuzz (seed {SEED}, {len(jobs)} mutants): " +
          "; ".join(f"{fmt} {c['refused']} refused / {c['accepted']} accepted / {c['REJECTED']} rejected"
                    for fmt, c in counts.items()))
    if failures:
        failures.sort()
        lines = [f"{len(failures)} of {len(jobs)} mutants crashed, hung or misbehaved (seed {SEED}):"]
        for fmt, i, what, args, why in failures[:8]:
            lines.append(f"- FUZZ_ONLY={fmt}:{i}: {what}\n  ./train_gpt2_asan {' '.join(map(str, args))}\n  {why}")
        pytest.fail("\n".join(lines))
    # the mutations are not all harmless: most mutants of each format must be refused
    for fmt, c in counts.items():
        if not only:
            assert c["refused"] >= c["accepted"] / 2, f"{fmt}: only {c['refused']} mutants were refused: {c}"
