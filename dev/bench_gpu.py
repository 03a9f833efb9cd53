"""GPU benchmark: train_gpt2fp32cu against PyTorch eager and torch.compile, same model, same batch.

In one run on one GPU, for each configuration (default: GPT-2 124M "d12" at T=1024 with B=4, 8, 16,
and "d4" at T=256 with B=16), full training steps (forward, backward, global-norm clipping at 1.0,
AdamW) of:
  - ./train_gpt2fp32cu (TF32 matmuls, its default), reading a token shard whose every window is
    the same batch;
  - PyTorch eager, fp32 with TF32 matmuls (torch.backends.cuda.matmul.allow_tf32 = True): a
    nanoGPT-style module (per-layer nn.Linear, F.scaled_dot_product_attention(is_causal=True),
    the LM head over the V real rows of wte) holding the same 16 tensors as the checkpoint, with
    torch.optim.AdamW(fused=True) and clip_grad_norm_; the same function as dev.model.GPT
    (tests/test_gpu_bench.py checks it), written the way a PyTorch user would;
  - the same module under torch.compile.
Each runs in its own process: --warmup untimed steps, then --steps timed steps; the table shows
the median. Reported: ms/step, tokens/s, MFU, peak GPU memory, and the ratios to eager/compile.

FLOPs per step (stated, not measured): tokens * (6 * N_mm + 12 * L * T * C), where
N_mm = L * 12 * C^2 + Vp * C are the matmul weights (qkv 3C^2, attention projection C^2, MLP 8C^2
per layer, the tied LM head over Vp columns), 6 = 2 (multiply-add) * 3 (forward and two backward
matmuls), and 12 * L * T * C is attention's Q.K^T and att.V, forward and backward, over the full
T x T (the causal half is not subtracted; the PaLM convention). MFU = FLOPs / step time / the
GPU's dense TF32 peak (no sparsity), from the table below or --peak-tflops.
Peak GPU memory: the maximum of nvidia-smi's memory.used while the process runs, minus the value
before it started (the same yardstick for all three; it includes the CUDA context and PyTorch's
cached-but-free blocks); PyTorch's own max_memory_allocated is reported beside it.
Usage: python -m dev.bench_gpu [--configs d12:4:1024,d12:8:1024,d12:16:1024,d4:16:256]
           [--steps 10] [--warmup 3] [--skip-compile] [--out FILE.md] [--json FILE.json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from dev.errors import UserError, cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# dense (no sparsity) TF32 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets
TF32_PEAK_TFLOPS = [
    ("H200", 494.7), ("H100 SXM", 494.7), ("H100 80GB HBM3", 494.7), ("H100 NVL", 417.0),
    ("H100 PCIe", 378.0), ("H100", 378.0), ("A100", 156.0), ("A10G", 35.0), ("A10", 62.5),
    ("L40S", 183.0), ("L4", 60.0), ("RTX 4090", 82.6), ("RTX 3090", 35.6),
]
DEFAULT_CONFIGS = "d12:4:1024,d12:8:1024,d12:16:1024,d4:16:256"


def flops_per_step(cfg, B, T):
    L, C = cfg.n_layer, cfg.n_embd
    n_mm = L * 12 * C * C + cfg.padded_vocab_size * C
    return B * T * (6 * n_mm + 12 * L * T * C)


# ---- the PyTorch side ----------------------------------------------------------------------

def build_torch_model(config, params):
    """nanoGPT-style torch module with the checkpoint's 16 tensors (numpy dict) as its weights."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    C, L, NH, V = config.n_embd, config.n_layer, config.n_head, config.vocab_size

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(C, eps=1e-5)
            self.qkv = nn.Linear(C, 3 * C, bias=config.qkv_bias)
            self.proj = nn.Linear(C, C)
            self.ln2 = nn.LayerNorm(C, eps=1e-5)
            self.fc = nn.Linear(C, 4 * C)
            self.fcproj = nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Parameter(torch.zeros(config.padded_vocab_size, C))
            self.wpe = nn.Parameter(torch.zeros(config.max_seq_len, C))
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(C, eps=1e-5)

        def forward(self, idx, targets):
            T = idx.shape[1]
            x = self.wte[idx] + self.wpe[:T]
            for blk in self.blocks:
                x = blk(x)
            logits = F.linear(self.lnf(x), self.wte[:V])  # the V real rows: padded columns never count
            return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))

    m = TorchGPT()
    t = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    with torch.no_grad():
        m.wte.copy_(t(params["wte"]))
        m.wpe.copy_(t(params["wpe"]))
        for l, blk in enumerate(m.blocks):
            blk.ln1.weight.copy_(t(params["ln1w"][l])); blk.ln1.bias.copy_(t(params["ln1b"][l]))
            blk.qkv.weight.copy_(t(params["qkvw"][l]))
            if config.qkv_bias:
                blk.qkv.bias.copy_(t(params["qkvb"][l]))
            blk.proj.weight.copy_(t(params["attprojw"][l])); blk.proj.bias.copy_(t(params["attprojb"][l]))
            blk.ln2.weight.copy_(t(params["ln2w"][l])); blk.ln2.bias.copy_(t(params["ln2b"][l]))
            blk.fc.weight.copy_(t(params["fcw"][l])); blk.fc.bias.copy_(t(params["fcb"][l]))
            blk.fcproj.weight.copy_(t(params["fcprojw"][l])); blk.fcproj.bias.copy_(t(params["fcprojb"][l]))
        m.lnf.weight.copy_(t(params["lnfw"])); m.lnf.bias.copy_(t(params["lnfb"]))
    return m


def torch_worker(args):
    """Runs in a child process: times the PyTorch steps and writes a JSON result."""
    import numpy as np
    import torch
    from dev.checkpoint import read_checkpoint
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config, params = read_checkpoint(args.model)
    model = build_torch_model(config, params).cuda()
    tokens = np.fromfile(args.batch, dtype=np.int64)
    B, T = args.batch_size, args.seq_len
    x = torch.from_numpy(tokens[:B * T].reshape(B, T)).cuda()
    y = torch.from_numpy(tokens[1:B * T + 1].reshape(B, T)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    fwd = torch.compile(model) if args.compile else model
    times, losses = [], []
    t_compile = time.perf_counter()
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        losses.append(loss.item())
        if i == args.warmup - 1:
            t_compile = t1 - t_compile
        if i >= args.warmup:
            times.append(1e3 * (t1 - t0))
    result = dict(ms=times, first_loss=losses[0], max_allocated=torch.cuda.max_memory_allocated(),
                  max_reserved=torch.cuda.max_memory_reserved(), warmup_s=t_compile, torch=torch.__version__)
    with open(args.result, "w") as f:
        json.dump(result, f)


# ---- the parent ----------------------------------------------------------------------------

class MemoryPoller:
    """Samples nvidia-smi's memory.used (MiB) of GPU 0 every 0.1 s; peak() - baseline."""

    def __init__(self):
        self.baseline = self._read()
        self.peak_mib = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read():
        r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                           capture_output=True, text=True)
        try:
            return float(r.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            return float("nan")

    def _run(self):
        while not self._stop.is_set():
            v = self._read()
            if v == v:
                self.peak_mib = max(self.peak_mib, v)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def used_mib(self):
        return self.peak_mib - self.baseline


def run_ours(exe, model_path, shard, B, T, args, tmp):
    out = os.path.join(tmp, f"ours_{B}_{T}")
    cmd = [exe, "--model", model_path, "-i", shard, "-b", str(B), "-t", str(T), "--steps",
           str(args.warmup + args.steps), "-v", "0", "-s", "0", "-o", out, "--lr-schedule", "constant",
           "--grad-clip", "1.0", "--tf32", "1"]
    with MemoryPoller() as mem:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"train_gpt2fp32cu failed:\n{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [rec for rec in records if "tokens_per_s" in rec]
    ms = [1e3 * B * T / rec["tokens_per_s"] for rec in steps[args.warmup:]]
    attention = records[0]["config"].get("attention_kernels", "?")
    return dict(ms=ms, first_loss=steps[0]["train_loss"], mem_mib=mem.used_mib(), attention=attention,
                cmd=" ".join(cmd))


def run_torch(model_path, batch_path, B, T, compiled, args, tmp):
    result = os.path.join(tmp, f"torch_{int(compiled)}_{B}_{T}.json")
    cmd = [sys.executable, "-m", "dev.bench_gpu", "--worker", "--model", model_path, "--batch", batch_path,
           "--batch-size", str(B), "--seq-len", str(T), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--result", result] + (["--compile"] if compiled else [])
    with MemoryPoller() as mem:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"PyTorch {'compile' if compiled else 'eager'} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    with open(result) as f:
        res = json.load(f)
    res["mem_mib"] = mem.used_mib()
    return res


def gpu_name():
    if shutil.which("nvidia-smi") is None:
        raise UserError("nvidia-smi not found: dev/bench_gpu.py runs on a machine with an NVIDIA GPU")
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        raise UserError("nvidia-smi sees no GPU: dev/bench_gpu.py runs on a machine with an NVIDIA GPU")
    name, driver = [s.strip() for s in r.stdout.strip().splitlines()[0].split(",")]
    return name, driver


def tf32_peak(name, override):
    if override:
        return override, "--peak-tflops"
    for key, tflops in TF32_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops, f"datasheet, {key}"
    raise UserError(f"no TF32 peak known for GPU '{name}': pass --peak-tflops N (dense TF32 TFLOP/s)")


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark train_gpt2fp32cu against PyTorch eager and torch.compile.")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated NAME:B:T (named model configuration, batch, length) (default: {DEFAULT_CONFIGS})")
    p.add_argument("--steps", type=int, default=10, help="timed steps per trainer (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, torch.compile's compilation included (default: 3)")
    p.add_argument("--skip-compile", action="store_true", help="leave out torch.compile")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="dense TF32 peak of the GPU, TFLOP/s (default: from the name)")
    p.add_argument("--out", help="write the markdown table here")
    p.add_argument("--json", help="write every measurement here")
    # the child-process mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--batch", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        raise UserError("--steps and --warmup must be >= 1")
    return args


def parse_configs(text):
    from dev.configs import resolve_config
    out = []
    for item in text.split(","):
        try:
            name, b, t = item.strip().split(":")
            cfg = resolve_config(name)
            out.append((name, cfg, int(b), int(t)))
        except ValueError as e:
            raise UserError(f"--configs item '{item}': expected NAME:B:T, e.g. d12:16:1024 ({e})")
    return out


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.worker:
        return torch_worker(args)
    import numpy as np
    from dev.checkpoint import write_checkpoint
    from dev.init import gpt2_init
    from dev.shards import write_token_shard

    configs = parse_configs(args.configs)
    name, driver = gpu_name()
    peak, peak_src = tf32_peak(name, args.peak_tflops)
    exe = os.path.join(REPO, "train_gpt2fp32cu")
    r = subprocess.run(["make", "-s", "train_gpt2fp32cu"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"make train_gpt2fp32cu failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    import torch
    print(f"bench: {name} (driver {driver}), dense TF32 peak {peak} TFLOP/s ({peak_src}); torch {torch.__version__}; "
          f"commit {commit}; {args.warmup} warmup + {args.steps} timed steps", flush=True)
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for cname, cfg, B, T in configs:
            if T > cfg.max_seq_len:
                raise UserError(f"{cname}: T={T} exceeds the model's context {cfg.max_seq_len}")
            if cname not in models:
                path = os.path.join(tmp, f"{cname}.bin")
                write_checkpoint(path, cfg, gpt2_init(cfg, 0))
                models[cname] = path
            # one batch, repeated: every window of the shard is the same (B, T) batch
            rng = np.random.default_rng(B * 100003 + T)
            base = rng.integers(0, cfg.vocab_size, B * T)
            n = args.warmup + args.steps + 1
            tokens = np.concatenate([np.tile(base, n), base[:1]])
            shard = os.path.join(tmp, f"shard_{cname}_{B}_{T}.bin")
            write_token_shard(shard, tokens)
            batch = os.path.join(tmp, f"batch_{cname}_{B}_{T}.i64")
            tokens[:B * T + 1].astype(np.int64).tofile(batch)
            flops = flops_per_step(cfg, B, T)
            label = f"{cname} B={B} T={T}"
            print(f"{label}: {flops / 1e12:.2f} TFLOP/step", flush=True)
            res = {"ours": run_ours(exe, models[cname], shard, B, T, args, tmp)}
            print(f"  train_gpt2fp32cu: median {statistics.median(res['ours']['ms']):.1f} ms", flush=True)
            res["eager"] = run_torch(models[cname], batch, B, T, False, args, tmp)
            print(f"  PyTorch eager:    median {statistics.median(res['eager']['ms']):.1f} ms", flush=True)
            if not args.skip_compile:
                res["compile"] = run_torch(models[cname], batch, B, T, True, args, tmp)
                print(f"  torch.compile:    median {statistics.median(res['compile']['ms']):.1f} ms "
                      f"(warmup with compilation {res['compile']['warmup_s']:.0f} s)", flush=True)
            raw.append(dict(config=cname, B=B, T=T, flops=flops, **res))
            for key, title in (("ours", f"train_gpt2fp32cu ({res['ours']['attention']} attention)"),
                               ("eager", "PyTorch eager (TF32)"), ("compile", "torch.compile (TF32)")):
                if key not in res:
                    continue
                med = statistics.median(res[key]["ms"])
                rows.append(dict(label=label, trainer=title, key=key, ms=med, tok_s=B * T / med * 1e3,
                                 mfu=flops / (med * 1e-3) / (peak * 1e12), mem=res[key]["mem_mib"],
                                 alloc=res[key].get("max_allocated"), loss=res[key]["first_loss"],
                                 eager_ms=statistics.median(res["eager"]["ms"]),
                                 compile_ms=statistics.median(res["compile"]["ms"]) if "compile" in res else None))
            write_outputs(args, rows, raw, name, driver, peak, peak_src, commit, torch.__version__, final=False)
    write_outputs(args, rows, raw, name, driver, peak, peak_src, commit, torch.__version__, final=True)


def write_outputs(args, rows, raw, name, driver, peak, peak_src, commit, torch_version, final):
    """The table (printed when final) to --out and the raw numbers to --json; called after every
    configuration too, so a run cut short still leaves what it measured."""
    lines = [
        f"GPU training step benchmark: {name}, driver {driver}, torch {torch_version}, commit {commit}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"median of {args.steps} steps after {args.warmup} warmup; FLOPs = tokens * (6 * N_mm + 12 * L * T * C) "
        f"(see dev/bench_gpu.py); MFU vs dense TF32 peak {peak} TFLOP/s ({peak_src}); peak memory = max nvidia-smi "
        f"memory.used during the run minus before (PyTorch's max_memory_allocated in brackets)",
        "",
        "| config | trainer | ms/step | tokens/s | MFU | peak GPU memory | first loss | vs eager | vs compile |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        alloc = f" ({r['alloc'] / 2**30:.1f} GiB)" if r["alloc"] else ""
        vs_c = f"{r['compile_ms'] / r['ms']:.2f}x" if r["compile_ms"] else "-"
        lines.append(f"| {r['label']} | {r['trainer']} | {r['ms']:.1f} | {r['tok_s']:,.0f} | {100 * r['mfu']:.1f}% | "
                     f"{r['mem'] / 1024:.1f} GiB{alloc} | {r['loss']:.4f} | {r['eager_ms'] / r['ms']:.2f}x | {vs_c} |")
    # the project's speed target, on d12 at B=16, T=1024: >= 1.2x eager, >= 1.0x compile, memory <= PyTorch's
    ours = next((r for r in rows if r["key"] == "ours" and r["label"] == "d12 B=16 T=1024"), None)
    if ours is not None:
        torch_rows = [r for r in rows if r["label"] == ours["label"] and r["key"] != "ours"]
        checks = [("tokens/s >= 1.2x PyTorch eager", ours["eager_ms"] / ours["ms"] >= 1.2)]
        if ours["compile_ms"]:
            checks.append(("tokens/s >= 1.0x torch.compile", ours["compile_ms"] / ours["ms"] >= 1.0))
        if torch_rows:
            checks.append(("peak memory <= PyTorch's (each)", all(ours["mem"] <= r["mem"] for r in torch_rows)))
        lines.append("")
        lines.append("Target (d12 B=16 T=1024): " + "; ".join(f"{what}: {'PASS' if ok else 'FAIL'}" for what, ok in checks))
    if not final:
        lines.append("")
        lines.append("(partial: the run has not finished all configurations)")
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gpu=name, driver=driver, peak_tflops=peak, commit=commit, runs=raw), f, indent=1)
    if final:
        print()
        print(text)
        for path in (args.out, args.json):
            if path:
                print(f"wrote {path}")


if __name__ == "__main__":
    cli_main(main)
