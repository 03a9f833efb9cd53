"""Write a fresh GPT-2 checkpoint (llm.c fp32 v3 format, see README "File formats").

Contract: `python create_model.py --config d4 --out out/d4.bin` writes a
GPT-2-initialised model (dev.init.gpt2_init: normal std 0.02, residual
projections attprojw/fcprojw std 0.02/sqrt(2L), LayerNorm weight 1 bias 0,
biases 0, padded wte rows 0), deterministic for --seed (same seed, same bytes);
--init pytorch draws PyTorch's layer defaults instead (dev.init.pytorch_init), and
header[9] records which (the trainers print it and keep it in what they save).
--n-layer/--n-head/--n-embd/--seq-len/--vocab-size override the named sizes;
--no-qkv-bias writes header[8] = 1 with qkvb all zero; --untied-head writes header[10] = 1
and a 17th tensor lm_head (Vp, C), drawn after the 16. --from-hf converts a
transformers GPT-2 (a local folder offline; a hub name only when it is cached
or the hub answers). It prints the resolved configuration, the parameter table
and the total; --dry-run stops there (no allocation, nothing written). Before
allocating it refuses dimensions beyond llmc/gpt2_params.h's bounds, a model
whose initialisation needs more than the machine's physical memory, an --out
that is a folder or lies under a file, and a disk without room for the file;
the file is written atomically (dev/files.py), so a full disk leaves no
partial file. Bad input: `error: ...` on stderr and exit 1.
"""

import argparse
import math
import os
import sys

from dev.configs import CONFIG_USES, resolve_config
from dev.checkpoint import checkpoint_file_size, num_parameters, param_shapes, write_checkpoint
from dev.errors import UserError, cli_main, physical_memory_bytes, require_memory
from dev.files import check_free_space, check_output_file


OVERRIDE_FLAGS = ("--n-layer", "--n-head", "--n-embd", "--seq-len", "--vocab-size")
MAX_SEED = 2**64 - 1  # numpy's Generator takes any non-negative int; the trainers' seeds are uint64


def init_memory_bytes(config):
    """Peak memory of gpt2_init + write_checkpoint, in bytes: the P floats, plus the draw and
    the scaled copy of the largest tensor that exist while it is filled."""
    largest = max(math.prod(s) for s in param_shapes(config).values())
    return 4 * num_parameters(config) + 8 * largest


def parse_args(argv):
    names = "; ".join(f"{k} = {v}" for k, v in CONFIG_USES.items())
    p = argparse.ArgumentParser(
        description="Create a GPT-2 checkpoint: a named configuration with GPT-2 initialisation, "
                    "or a conversion of a transformers GPT-2.")
    p.add_argument("--config", default="d4", help=f"named configuration: {names} (default: d4)")
    p.add_argument("--n-layer", type=int, help="override L, the number of transformer blocks")
    p.add_argument("--n-head", type=int, help="override NH, attention heads (must divide C)")
    p.add_argument("--n-embd", type=int, help="override C, the channel width")
    p.add_argument("--seq-len", type=int, help="override maxT, the longest sequence (rows of wpe)")
    p.add_argument("--vocab-size", type=int, help="override V, the vocabulary size (at most 65536)")
    p.add_argument("--no-qkv-bias", action="store_true",
                   help="no QKV bias: qkvb is written as zeros and header[8] = 1 tells the "
                        "trainers never to train it")
    p.add_argument("--untied-head", action="store_true",
                   help="give the classifier its own weight lm_head (Vp, C), a 17th tensor after the 16 "
                        "(header[10] = 1), as Power et al.'s model has; default: tied to wte, as GPT-2")
    p.add_argument("--init", choices=("gpt2", "pytorch"), default="gpt2",
                   help="initialisation: gpt2 (normal std 0.02, residual projections 0.02/sqrt(2L); "
                        "the default) or pytorch (PyTorch's layer defaults, as in Power et al.'s "
                        "grokking code: embeddings N(0, 1), Linear weights and biases "
                        "U(+-1/sqrt(fan_in)), LayerNorm 1 and 0); recorded in header[9]")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the numpy Generator that draws the initial weights (default: 0)")
    p.add_argument("--out", help="output checkpoint path (default: out/<config>.bin, or "
                                 "out/hf_<name>.bin with --from-hf)")
    p.add_argument("--from-hf", metavar="NAME_OR_DIR",
                   help="convert a transformers GPT-2 instead of initialising: a local folder "
                        "(save_pretrained layout) or a hub name such as gpt2 (used only when "
                        "cached or the hub is reachable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the configuration, parameter table and file size; write nothing")
    return p.parse_args(argv)


def print_table(config, out=sys.stdout):
    """Print the 16 tensors (name, shape, count), the total and the file size."""
    print(f"{'#':>2}  {'name':<9} {'shape':<18} {'count':>15}", file=out)
    for i, (name, shape) in enumerate(param_shapes(config).items(), 1):
        count = 1
        for d in shape:
            count *= d
        shape_s = "(" + ", ".join(str(d) for d in shape) + ")"
        print(f"{i:>2}  {name:<9} {shape_s:<18} {count:>15,}", file=out)
    P = num_parameters(config)
    print(f"    {'total':<9} {'':<18} {P:>15,} floats", file=out)
    print(f"    {'file':<9} {'':<18} {checkpoint_file_size(config):>15,} bytes (1024 + 4*P)",
          file=out)
    phys = physical_memory_bytes()
    print(f"    {'memory':<9} {'':<18} {init_memory_bytes(config):>15,} bytes to initialise"
          + (f" (this machine has {phys:,})" if phys else ""), file=out)


def load_hf_model(name_or_dir):
    """Load a transformers GPT2LMHeadModel offline-first; UserError with a fix otherwise."""
    looks_like_path = os.sep in name_or_dir or name_or_dir.startswith(".") or os.path.exists(name_or_dir)
    if looks_like_path:
        if not os.path.isdir(name_or_dir):
            raise UserError(f"--from-hf {name_or_dir}: no such folder. Pass a folder written by "
                            f"transformers' save_pretrained, or a hub name such as gpt2.")
        from transformers import GPT2LMHeadModel
        try:
            return GPT2LMHeadModel.from_pretrained(name_or_dir, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any load failure is the user's folder
            raise UserError(f"--from-hf {name_or_dir}: could not load a GPT-2 model from this "
                            f"folder ({type(e).__name__}: {str(e).splitlines()[0][:300]}). It needs "
                            f"config.json and the weights from save_pretrained.") from e
    from transformers import GPT2LMHeadModel
    from dev.tokenizer import network_reachable
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_dir, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached; maybe downloadable
        pass
    if not network_reachable("huggingface.co"):
        raise UserError(f"--from-hf {name_or_dir}: not in the local Hugging Face cache and the hub "
                        f"is unreachable. On a machine with internet run "
                        f"GPT2LMHeadModel.from_pretrained({name_or_dir!r}).save_pretrained(DIR), "
                        f"copy DIR here and pass --from-hf DIR.")
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_dir)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"--from-hf {name_or_dir}: download failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300]}).") from e


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed {args.seed}: must be in [0, 2^64 - 1]; pass a non-negative "
                        f"integer such as 0.")
    if args.out is not None:
        check_output_file(args.out, "--out")
    overrides = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                     max_seq_len=args.seq_len, vocab_size=args.vocab_size)
    if args.from_hf:
        given = [flag for flag, v in zip(OVERRIDE_FLAGS, overrides.values()) if v is not None]
        given += [f for f, on in (("--no-qkv-bias", args.no_qkv_bias), ("--untied-head", args.untied_head)) if on]
        if given:
            raise UserError(f"--from-hf takes its sizes and head from the transformers model; drop "
                            f"{', '.join(given)}.")
        return convert_hf(args)
    config = resolve_config(args.config, qkv_bias=not args.no_qkv_bias, untied_head=args.untied_head, **overrides)
    out = args.out or os.path.join("out", f"{args.config}.bin")
    print(f"config: {args.config}  {config.describe()}  init={args.init}  seed={args.seed}")
    print_table(config)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    check_output_file(out, "--out")
    require_memory(init_memory_bytes(config), f"initialising {config.describe()} "
                   f"({num_parameters(config):,} parameters)",
                   "Pick smaller --n-layer/--n-embd/--seq-len/--vocab-size, or a machine with more memory.")
    check_free_space(out, checkpoint_file_size(config), "--out")
    from dev.init import init_params
    params = init_params(config, args.seed, args.init)
    write_checkpoint(out, config, params, init=args.init)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
    return 0


def convert_hf(args):
    import torch
    from dev.model import from_hf
    hf = load_hf_model(args.from_hf)
    if getattr(hf.config, "model_type", "gpt2") != "gpt2":
        raise UserError(f"--from-hf {args.from_hf}: model type {hf.config.model_type!r}, expected gpt2.")
    try:
        model = from_hf(hf.eval())
    except ValueError as e:
        raise UserError(f"--from-hf {args.from_hf}: {e}") from e
    config = model.config
    base = os.path.basename(os.path.normpath(args.from_hf)).replace("/", "_") or "model"
    out = args.out or os.path.join("out", f"hf_{base}.bin")
    print(f"config: from {args.from_hf}  {config.describe()}")
    print_table(config)
    # Check the conversion on one short random batch before writing.
    T = min(16, config.max_seq_len)
    idx = torch.randint(0, config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx)[0][..., :config.vocab_size]
        theirs = hf(idx).logits.float()
    diff = (ours - theirs).abs().max().item()
    print(f"check: logits max abs diff vs transformers on a (1, {T}) batch = {diff:.3g}")
    if not diff <= 1e-3:
        raise UserError(f"--from-hf {args.from_hf}: converted model disagrees with transformers "
                        f"(logits max abs diff {diff:.3g} > 1e-3); the model is not a standard GPT-2.")
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    check_output_file(out, "--out")
    check_free_space(out, checkpoint_file_size(config), "--out")
    model.save_checkpoint(out)
    print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
    return 0


if __name__ == "__main__":
    cli_main(main)
