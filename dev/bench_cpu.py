"""CPU benchmark: train_gpt2 (C) against PyTorch eager and torch.compile, same model, same batch.

Runs, in one process run and with the same thread count for all three, full training steps
(forward, backward, global-norm clipping, AdamW) of the d4 model (L=4, NH=4, C=128, maxT=256,
V=50257) at B=4, T=256 on random tokens, and prints ms/step, tokens/s, GFLOP/s and the ratios.

FLOPs per step (stated, not measured): tokens * (6 * N_mm + 12 * L * T * C), where
N_mm = L * 12 * C^2 + Vp * C are the matmul weights (qkv 3C^2, attention projection C^2, MLP
8C^2 per layer, and the tied LM head over Vp columns); 6 = 2 (multiply-add) * 3 (forward, and
two matmuls in backward); 12 * L * T * C is attention's Q.K^T and att.V counted over the full
T x T (the causal half is not subtracted). Embedding lookups, LayerNorm, GELU, softmax and AdamW
are not counted. For d4 at B=4, T=256 that is 46.0 GFLOP per step.

Each trainer runs --warmup steps first (not timed: page faults, torch.compile's compilation),
then --steps timed steps; the table reports the median step and the peak resident memory. When
the environment sets OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE (this machine kind sets Haswell, the
AVX2 kernel), a second C row runs with both removed for that one command, so OpenBLAS picks the
kernel for the CPU (SkylakeX, AVX-512, where it has it); the tests and CI never change them. The C trainer's step time comes
from its log (tokens_per_s of each step). Nothing is written besides a temporary folder and,
with --out, the table.
Usage: python -m dev.bench_cpu [--threads 2] [--steps 8] [--warmup 2] [--skip-compile] [--out FILE]
       (or: make bench-cpu)
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from dev.errors import UserError, cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark train_gpt2 against PyTorch eager and "
                                            "torch.compile on the d4 model (B=4, T=256).")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for every trainer (OpenMP and torch) (default: all cores)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per trainer (default: 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--batch-size", type=int, default=4, help="B (default: 4)")
    p.add_argument("--seq-len", type=int, default=256, help="T (default: 256)")
    p.add_argument("--config", default="d4", help="named model configuration (default: d4)")
    p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        raise UserError("--threads and --steps must be >= 1, --warmup >= 0")
    return args


def flops_per_step(cfg, B, T):
    L, C = cfg.n_layer, cfg.n_embd
    n_mm = L * 12 * C * C + cfg.padded_vocab_size * C
    return B * T * (6 * n_mm + 12 * L * T * C)


def bench_c(model_path, data_path, args, tmp, env=None, tag="c_run"):
    """The C trainer's timed steps (ms), its table name (with the OpenBLAS kernel it ran) and its
    peak resident memory in MiB; env replaces the environment (the unset-kernel row)."""
    exe = os.path.join(REPO, "train_gpt2")
    r = subprocess.run(["make", "-s", "train_gpt2"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"make train_gpt2 failed:\n{r.stderr}")
    out = os.path.join(tmp, tag)
    cmd = [exe, "--model", model_path, "-i", data_path, "-b", str(args.batch_size), "-t", str(args.seq_len),
           "--steps", str(args.warmup + args.steps), "-v", "0", "-s", "0", "--threads", str(args.threads),
           "-o", out, "--lr-schedule", "constant"]
    # wait4 on this one child gives its own peak resident memory (ru_maxrss, KiB on Linux)
    with open(os.path.join(tmp, tag + ".out"), "w+") as fo, open(os.path.join(tmp, tag + ".err"), "w+") as fe:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fo, stderr=fe, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            fo.seek(0)
            fe.seek(0)
            raise UserError(f"train_gpt2 failed:\n{fo.read()[-2000:]}\n{fe.read()[-2000:]}")
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [rec for rec in records if "tokens_per_s" in rec][args.warmup:]
    ms = [1e3 * args.batch_size * args.seq_len / rec["tokens_per_s"] for rec in steps]
    blas = records[0]["config"]["blas"]
    return ms, f"train_gpt2 (C, {blas.split(' (')[0]})", usage.ru_maxrss / 1024


def peak_rss_mib():
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_torch(model_path, batch, args, compiled):
    import torch
    from dev.model import GPT
    torch.manual_seed(0)
    model = GPT.from_checkpoint(model_path)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    fwd = torch.compile(model) if compiled else model
    x, y = batch
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t1 = time.perf_counter()
        if i >= args.warmup:
            times.append(1e3 * (t1 - t0))
    return times


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    import numpy as np
    import torch
    from dev.checkpoint import write_checkpoint
    from dev.configs import resolve_config
    from dev.init import gpt2_init
    from dev.shards import write_token_shard

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    cfg = resolve_config(args.config)
    B, T = args.batch_size, args.seq_len
    flops = flops_per_step(cfg, B, T)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "model.bin")
        write_checkpoint(model_path, cfg, gpt2_init(cfg, 0))
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, cfg.vocab_size, B * T * (args.warmup + args.steps + 2) + 1)
        data_path = os.path.join(tmp, "train.bin")
        write_token_shard(data_path, tokens)
        batch = (torch.from_numpy(tokens[:B * T].reshape(B, T)).long(),
                 torch.from_numpy(tokens[1:B * T + 1].reshape(B, T)).long())
        print(f"bench: {args.config} (L={cfg.n_layer} NH={cfg.n_head} C={cfg.n_embd} V={cfg.vocab_size}), "
              f"B={B} T={T}, {args.threads} threads, {args.warmup} warmup + {args.steps} timed steps each",
              flush=True)
        ms, name, rss = bench_c(model_path, data_path, args, tmp)
        rows.append((name, ms, rss))
        print(f"  {name}: median {statistics.median(ms):.1f} ms/step", flush=True)
        # the same trainer with OpenBLAS choosing its kernel for the CPU: OPENBLAS_CORETYPE and
        # OPENBLAS_L2_SIZE removed for this one command (never in the tests or CI)
        if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            ms, name, rss = bench_c(model_path, data_path, args, tmp, env=env, tag="c_run_unset")
            name = name[:-1] + "; OPENBLAS_* unset)"
            rows.append((name, ms, rss))
            print(f"  {name}: median {statistics.median(ms):.1f} ms/step", flush=True)
        ms = bench_torch(model_path, batch, args, compiled=False)
        rows.append(("PyTorch eager", ms, peak_rss_mib()))
        print(f"  PyTorch eager: median {statistics.median(ms):.1f} ms/step", flush=True)
        if not args.skip_compile:
            t0 = time.perf_counter()
            ms = bench_torch(model_path, batch, args, compiled=True)
            rows.append(("torch.compile", ms, peak_rss_mib()))
            print(f"  torch.compile: median {statistics.median(ms):.1f} ms/step "
                  f"(warmup incl. compilation {time.perf_counter() - t0 - sum(ms) / 1e3:.0f} s)", flush=True)
    eager = statistics.median(next(r[1] for r in rows if r[0] == "PyTorch eager"))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU training step, {args.config} B={B} T={T}: {flops / 1e9:.1f} GFLOP/step "
        f"(tokens * (6 * N_mm + 12 * L * T * C), see dev/bench_cpu.py)",
        f"{cpu}, {args.threads} threads; torch {torch.__version__}; commit {commit}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; median of {args.steps} steps after {args.warmup} warmup; "
        f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at the end (other work on "
        f"the machine slows every trainer)",
        "",
        f"| {'trainer':<34} | {'ms/step':>8} | {'min ms':>7} | {'tokens/s':>9} | {'GFLOP/s':>8} | {'vs eager':>8} "
        f"| {'peak RSS':>9} |",
        f"|{'-' * 36}|{'-' * 10}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 11}|",
    ]
    for name, ms, rss in rows:
        med = statistics.median(ms)
        lines.append(f"| {name:<34} | {med:>8.1f} | {min(ms):>7.1f} | {B * T / med * 1e3:>9.0f} | "
                     f"{flops / med / 1e6:>8.1f} | {eager / med:>7.2f}x | {rss:>5.0f} MiB |")
    lines.append("")
    lines.append("peak RSS: the C trainer's own process (wait4); PyTorch's is this Python process's peak so far "
                 "(torch and the benchmark's data included; torch.compile's row includes eager's run before it)")
    text = "\n".join(lines)
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    cli_main(main)
