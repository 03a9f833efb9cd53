"""By-hand check that the CPU trainer's bytes depend neither on the thread count nor on the
OpenBLAS kernel: trains the same 8 steps with 1, 2, 3 and 4 threads under each OpenBLAS core
type and compares the model and training-state files byte for byte.

  python -m dev.check_determinism                      # ./train_gpt2, the four kernel settings
  python -m dev.check_determinism --trainer /tmp/train_gpt2_noblas --kernels machine

Kernel settings: Haswell, SkylakeX and Zen set OPENBLAS_CORETYPE for the trainer's process;
`unset` removes both OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (OpenBLAS picks the kernel for the
CPU); `machine` keeps this shell's environment. Only this script's child processes see the
change (the test suite and CI never touch OPENBLAS_*).

Within one kernel setting the bytes must be equal for every thread count (the trainer's
guarantee: tiles of work fixed by the shapes, reductions in a fixed order). Across kernels they
may differ (each kernel rounds its own way), and the script prints whether they did. The model is
sized so that the matmuls have several row tiles (B*T = 512 rows, Vp = 640) and a tile count that
3 threads do not divide evenly. The elapsed-seconds slots of the state files are not compared.
Exit status 1 if any setting gives two different results.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

import numpy as np

from dev.checkpoint import ModelConfig, write_checkpoint
from dev.errors import UserError, cli_main
from dev.init import gpt2_init
from dev.shards import write_token_shard

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = ("Haswell", "SkylakeX", "Zen", "unset")
CONFIG = ModelConfig(max_seq_len=128, vocab_size=600, n_layer=2, n_head=4, n_embd=64)


def digest(path, state=False):
    raw = bytearray(open(path, "rb").read())
    if state:
        raw[84:92] = bytes(8)  # elapsed seconds (wall time)
    return hashlib.sha256(raw).hexdigest()[:16]


def run(trainer, workdir, kernel, threads, steps):
    env = dict(os.environ)
    if kernel == "unset":
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    elif kernel != "machine":
        env["OPENBLAS_CORETYPE"] = kernel
    out = os.path.join(workdir, f"run_{kernel}_{threads}")
    cmd = [trainer, "--model", os.path.join(workdir, "model.bin"),
           "-i", os.path.join(workdir, "train.bin"), "-j", os.path.join(workdir, "val.bin"),
           "-b", "4", "-t", "128", "--steps", str(steps), "-l", "3e-3", "--warmup", "2",
           "--weight-decay", "0.05", "-v", "4", "-m", "2", "-s", "0", "--seed", "42",
           "--threads", str(threads), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise UserError(f"the trainer failed ({' '.join(cmd)}):\n{r.stderr[-2000:]}")
    core = next((line.split("|")[2].strip() for line in r.stdout.splitlines()
                 if line.startswith("| BLAS ")), "?")
    return (digest(os.path.join(out, f"model_{steps:06d}.bin")),
            digest(os.path.join(out, f"state_{steps:06d}.bin"), state=True), core)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", default=os.path.join(REPO, "train_gpt2"))
    ap.add_argument("--kernels", default=",".join(KERNELS),
                    help="comma-separated: Haswell, SkylakeX, Zen, unset, machine")
    ap.add_argument("--threads", default="1,2,3,4")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args(argv)
    if not os.path.isfile(args.trainer):
        raise UserError(f"trainer {args.trainer} not found: run `make train_gpt2` (or pass --trainer)")
    threads = [int(t) for t in args.threads.split(",")]
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        write_checkpoint(os.path.join(workdir, "model.bin"), CONFIG, gpt2_init(CONFIG, seed=3))
        rng = np.random.default_rng(0)
        write_token_shard(os.path.join(workdir, "train.bin"), rng.integers(0, CONFIG.vocab_size, 20000))
        write_token_shard(os.path.join(workdir, "val.bin"), rng.integers(0, CONFIG.vocab_size, 3000))
        results = {}
        for kernel in args.kernels.split(","):
            rows = [run(args.trainer, workdir, kernel, t, args.steps) for t in threads]
            same = len({(m, s) for m, s, _ in rows}) == 1
            failed |= not same
            results[kernel] = rows[0][:2]
            print(f"{kernel:9s} BLAS: {rows[0][2]}")
            for t, (m, s, _) in zip(threads, rows):
                print(f"  threads {t}: model {m}  state {s}")
            print(f"  -> {'identical' if same else 'DIFFERENT'} across threads {args.threads}")
        if len(results) > 1:
            distinct = len(set(results.values()))
            print(f"{distinct} distinct result(s) across the {len(results)} kernel settings "
                  "(kernels may round differently from one another)")
    return 1 if failed else 0


if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
