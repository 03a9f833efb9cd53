"""Convert llm.c's bfloat16 checkpoint (version 5) to this project's fp32 version 3.

llm.c's train_gpt2.py (write_model with dtype "bfloat16") and train_gpt2.cu write version-5
files: the same 256-int32 header as version 3 ([0] 20240326, [1] 5, [2] maxT, [3] V, [4] L,
[5] NH, [6] C, [7] Vp) and the same 16 tensors in the same order, each value a bfloat16 (the
top 16 bits of an fp32). The upcast is exact: every bf16 value is an fp32 value. The output is
written atomically, with header[9] "not recorded" (llm.c does not say how the weights began).

    python -m dev.convert_llmc gpt2_124M_bf16.bin gpt2_124M.bin

The trainers and dev.checkpoint refuse a version-5 file with a message naming this command.
"""

import argparse
import os
import sys

import numpy as np

from dev.checkpoint import param_shapes, read_llmc_bf16, write_checkpoint
from dev.errors import UserError, cli_main


def convert(src, dst, force=False):
    """Write the fp32 version-3 copy of the version-5 file src to dst; returns (config, max |w|)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise UserError(f"the output {dst} is the input file; give another path")
    if os.path.exists(dst) and not force:
        raise UserError(f"{dst} already exists; pass --force to replace it")
    config, params = read_llmc_bf16(src)
    write_checkpoint(dst, config, {n: params[n] for n in param_shapes(config)})
    return config, max(float(np.abs(a).max()) for a in params.values())


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m dev.convert_llmc",
        description="Convert llm.c's bfloat16 model file (version 5) to the fp32 version-3 file "
                    "the trainers read (exact upcast).")
    p.add_argument("bf16_model", help="llm.c's version-5 file, e.g. gpt2_124M_bf16.bin")
    p.add_argument("out", help="the fp32 version-3 checkpoint to write")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config, peak = convert(args.bf16_model, args.out, args.force)
    print(f"converted {args.bf16_model} (llm.c bfloat16, version 5) -> {args.out} (fp32, version 3): "
          f"{config.describe()}, max |w| {peak:.4g}")
    return 0


if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
