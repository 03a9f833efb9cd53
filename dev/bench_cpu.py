"""CPU benchmark: train_gpt2 (C) against PyTorch eager and torch.compile, same model, same batch.

Workloads (each trainer runs the same model on the same batch with the same thread count):
  d4         the TinyStories baseline (L=4, NH=4, C=128, V=50257), B=4, T=256 on random tokens,
             2 threads;
  mod97-1t   the grokking model of experiment 00010 (L=2, NH=4, C=128, V=101 -> Vp=128) on an
             example shard of x+y mod 97 (E=8, T=7, the loss on the answer position), B=512,
             1 thread;
  mod97-2t   the same on 2 threads.
Each measures full training steps (forward, backward, global-norm clipping, AdamW).

FLOPs per step (stated, not measured): tokens * (6 * N_mm + 12 * L * T * C), where
N_mm = L * 12 * C^2 + Vp * C are the matmul weights (qkv 3C^2, attention projection C^2, MLP
8C^2 per layer, and the tied LM head over Vp columns); 6 = 2 (multiply-add) * 3 (forward, and
two matmuls in backward); 12 * L * T * C is attention's Q.K^T and att.V counted over the full
T x T (the causal half is not subtracted). Embedding lookups, LayerNorm, GELU, softmax and AdamW
are not counted. d4 at B=4, T=256: 46.0 GFLOP per step; mod97 at B=512, T=7: 8.9.
The FMA peak is threads * clock * FLOPs per cycle per core, with the clock /proc/cpuinfo reports
and 32 FLOPs per cycle (two 256-bit FMA pipes, AVX2) or 64 where the CPU has AVX-512; a core that
runs above that clock shows more than 100%.

Every trainer runs in a process of its own, so each row's peak resident memory (wait4) is that
trainer's alone: --warmup steps first (not timed: page faults, torch.compile's compilation), then
--steps timed steps; the table gives the median and the fastest step. When the environment sets
OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE, a second C row runs with both removed for that one command,
so OpenBLAS picks its kernel for the CPU (SkylakeX, AVX-512, where it has it); the tests and CI
never change them. The C trainer's step times come from its log (tokens_per_s of each step).
The machine is shared: the load average is printed before and after each workload.
Usage: python -m dev.bench_cpu [--workload d4 --workload mod97-1t ...] [--steps N] [--warmup N]
       [--skip-compile] [--out FILE]      (make bench-cpu: all three, table to dev/results/)
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

# name: (model configuration, B, T, threads, data kind)
WORKLOADS = {
    "d4": ("d4", 4, 256, 2, "tokens"),
    "mod97-1t": ("mod97", 512, 7, 1, "examples"),
    "mod97-2t": ("mod97", 512, 7, 2, "examples"),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark train_gpt2 against PyTorch eager and torch.compile "
                                            "on the d4 and mod97 workloads.")
    p.add_argument("--workload", action="append", choices=list(WORKLOADS),
                   help="a workload to run (repeatable; default: all)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per trainer (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--torch-worker", help=argparse.SUPPRESS)  # internal: one PyTorch run, JSON out
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0, got --steps {args.steps} --warmup {args.warmup}")
    return args


def flops_per_step(cfg, B, T):
    L, C = cfg.n_layer, cfg.n_embd
    n_mm = L * 12 * C * C + cfg.padded_vocab_size * C
    return B * T * (6 * n_mm + 12 * L * T * C)


def cpu_info():
    """(model name, MHz, FLOPs per cycle per core) from /proc/cpuinfo."""
    name, mhz, flags = platform.processor() or "cpu", 0.0, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and name in ("cpu", platform.processor()):
                    name = value
                elif key == "cpu MHz" and not mhz:
                    mhz = float(value)
                elif key == "flags" and not flags:
                    flags = value
    except OSError:
        pass
    per_cycle = 64 if "avx512f" in flags.split() else 32 if "fma" in flags.split() else 16
    return name, mhz, per_cycle


def run_measured(cmd, env=None, what="a trainer"):
    """Runs cmd to completion; returns (stdout, peak resident MiB of that process)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fo, stderr=fe, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise UserError(f"{what} failed ({' '.join(map(str, cmd[:3]))} ...):\n{out[-2000:]}\n{err[-2000:]}")
    return out, usage.ru_maxrss / 1024  # KiB on Linux


def torch_worker(spec):
    """One PyTorch run in this process (eager or compiled); prints its step times as JSON."""
    import numpy as np
    import torch
    from dev.model import GPT
    s = json.loads(spec)
    torch.set_num_threads(s["threads"])
    torch.manual_seed(0)
    model = GPT.from_checkpoint(s["model"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    fwd = torch.compile(model) if s["compiled"] else model
    data = np.load(s["batch"])
    x, y = torch.from_numpy(data["x"]).long(), torch.from_numpy(data["y"]).long()
    mask = torch.from_numpy(data["mask"]) if "mask" in data else None
    times = []
    for i in range(s["warmup"] + s["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = fwd(x, y, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t1 = time.perf_counter()
        if i >= s["warmup"]:
            times.append(1e3 * (t1 - t0))
    print(json.dumps({"ms": times, "torch": torch.__version__}))


def bench_torch(w, paths, args, compiled):
    """PyTorch's timed steps (ms), its version and its process's peak resident MiB."""
    spec = json.dumps({"model": paths["model"], "batch": paths["batch"], "threads": w[3], "compiled": compiled,
                       "warmup": args.warmup, "steps": args.steps})
    out, rss = run_measured([sys.executable, "-m", "dev.bench_cpu", "--torch-worker", spec],
                            what="torch.compile" if compiled else "PyTorch eager")
    r = json.loads(out.strip().splitlines()[-1])
    return r["ms"], r["torch"], rss


def make_inputs(w, tmp):
    """The model checkpoint, the C trainer's shard and PyTorch's first batch (the same tokens)."""
    import numpy as np
    from dev.checkpoint import write_checkpoint
    from dev.configs import resolve_config
    from dev.init import gpt2_init
    from dev.shards import write_example_shard, write_token_shard
    name, B, T, _, kind = w
    cfg = resolve_config(name)
    paths = {"model": os.path.join(tmp, "model.bin"), "data": os.path.join(tmp, "train.bin"),
             "batch": os.path.join(tmp, "batch.npz")}
    write_checkpoint(paths["model"], cfg, gpt2_init(cfg, 0))
    rng = np.random.default_rng(0)
    if kind == "tokens":
        tokens = rng.integers(0, cfg.vocab_size, B * T * 64 + 1)
        write_token_shard(paths["data"], tokens)
        np.savez(paths["batch"], x=tokens[:B * T].reshape(B, T), y=tokens[1:B * T + 1].reshape(B, T))
    else:  # x+y mod 97 examples, as dev.mod_arith writes them (E = T + 1)
        from dev.mod_arith import all_examples
        tokens, mask = all_examples(97)
        assert tokens.shape[1] == T + 1
        order = rng.permutation(len(tokens))
        tokens, mask = tokens[order], mask[order]
        write_example_shard(paths["data"], tokens, mask, cfg.vocab_size)
        np.savez(paths["batch"], x=tokens[:B, :-1], y=tokens[:B, 1:], mask=mask[:B, 1:].astype(np.int64))
    return cfg, paths


def bench_workload(key, args, peak_per_core):
    w = WORKLOADS[key]
    name, B, T, threads, kind = w
    load0 = os.getloadavg()[0]
    rows = []  # (trainer, ms list, rss)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, paths = make_inputs(w, tmp)
        print(f"bench {key}: {name} (L={cfg.n_layer} NH={cfg.n_head} C={cfg.n_embd} V={cfg.vocab_size}), B={B} "
              f"T={T}, {threads} thread(s), {args.warmup} warmup + {args.steps} timed steps each", flush=True)
        r = subprocess.run(["make", "-s", "train_gpt2"], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"make train_gpt2 failed:\n{r.stderr}")
        c_runs = [(None, "")]
        if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            c_runs.append((env, "; OPENBLAS_* unset"))
        blas = ""
        for i, (env, note) in enumerate(c_runs):
            out = os.path.join(tmp, f"c{i}")
            cmd = [os.path.join(REPO, "train_gpt2"), "--model", paths["model"], "-i", paths["data"], "-j", "",
                   "-b", str(B), "-t", str(T), "--steps", str(args.warmup + args.steps), "-v", "0", "-s", "0",
                   "--threads", str(threads), "-o", out, "--lr-schedule", "constant"]
            _, rss = run_measured(cmd, env=env, what="train_gpt2")
            records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
            ms = [1e3 * B * T / rec["tokens_per_s"] for rec in records if "tokens_per_s" in rec][args.warmup:]
            blas = records[0]["config"]["blas"]
            kernel = blas.split("kernel ")[-1].split(" ")[0] if "kernel " in blas else "no BLAS"
            rows.append((f"train_gpt2 (C, {kernel}{note})", ms, rss))
            print(f"  {rows[-1][0]}: median {statistics.median(ms):.1f} ms/step", flush=True)
        torch_version = ""
        for compiled in ([False] if args.skip_compile else [False, True]):
            ms, torch_version, rss = bench_torch(w, paths, args, compiled)
            rows.append(("torch.compile" if compiled else "PyTorch eager", ms, rss))
            print(f"  {rows[-1][0]}: median {statistics.median(ms):.1f} ms/step", flush=True)
    load1 = os.getloadavg()[0]
    flops = flops_per_step(cfg, B, T)
    med = {r[0]: statistics.median(r[1]) for r in rows}
    eager, compiled = med.get("PyTorch eager"), med.get("torch.compile")
    peak = peak_per_core * threads
    lines = [f"### {key}: {name}, B={B} T={T}, {threads} thread(s), {flops / 1e9:.1f} GFLOP/step",
             f"load average {load0:.1f} before, {load1:.1f} after; {blas}; torch {torch_version}", "",
             "| trainer | ms/step (median) | min ms | tokens/s | GFLOP/s | FMA peak | vs eager | vs compile | peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for trainer, ms, rss in rows:
        m = statistics.median(ms)
        ratio = lambda ref: f"{m / ref:.2f}x" if ref else "-"
        lines.append(f"| {trainer} | {m:.1f} | {min(ms):.1f} | {B * T / m * 1e3:.0f} | {flops / m / 1e6:.1f} | "
                     f"{100 * flops / m / 1e6 / peak:.0f}% | {ratio(eager)} | {ratio(compiled)} | {rss:.0f} MiB |")
    return lines


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.torch_worker:
        return torch_worker(args.torch_worker)
    keys = args.workload or list(WORKLOADS)
    cpu, mhz, per_cycle = cpu_info()
    peak_per_core = mhz * per_cycle / 1e3  # GFLOP/s
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    cc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()
    import numpy
    lines = [f"CPU training steps: train_gpt2 vs PyTorch, {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}",
             f"{cpu}, {os.cpu_count()} cores, {mhz:.0f} MHz; FMA peak {peak_per_core:.1f} GFLOP/s per core "
             f"({per_cycle} FLOPs/cycle at that clock); {cc[0] if cc else 'gcc ?'}; numpy {numpy.__version__}; "
             f"python {platform.python_version()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}",
             f"median and fastest of {args.steps} steps after {args.warmup} warmup; ratios are ms/step over "
             f"PyTorch eager's and torch.compile's (below 1 = train_gpt2 faster); each trainer in its own process, "
             f"its peak resident memory from wait4", ""]
    for key in keys:
        lines += bench_workload(key, args, peak_per_core) + [""]
    lines.append("FLOPs as in dev/bench_cpu.py: tokens * (6 * N_mm + 12 * L * T * C); the FMA peak at the clock "
                 "/proc/cpuinfo reports (a core running above it shows over 100%).")
    text = "\n".join(lines)
    print()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    cli_main(main)
