"""LoRA adapter files (llmc/lora.h), and what to do with them: merge into a checkpoint, export to PEFT.

A targeted matrix W (out, in) of layer l acts as W + (alpha / r) B A, with A (r, in) and
B (out, r) trained and W frozen. Targets and their transformers/PEFT modules (TARGETS, HF_MODULES):
qkvw attn.c_attn, attprojw attn.c_proj, fcw mlp.c_fc, fcprojw mlp.c_proj.

Adapter file (README "File formats"): 256 int32 header [0] 20261127, [1] 1, [2] rank r, [3] alpha
(float32 bits), [4] target mask (1 qkvw, 2 attprojw, 4 fcw, 8 fcprojw), [5] L, [6] C, [7,8] the
base model's checksum (hash_words of its P floats, lo/hi), the rest 0; then for each target in
mask order A (L, r, in) and B (L, out, r), float32. Exactly 1024 + 4 Q bytes.

    python -m dev.lora merge --model base.bin --adapter out/ft/adapter_000200.bin --out merged.bin
    python -m dev.lora export-peft --model base.bin --adapter adapter.bin --out-dir out/ft_peft

merge writes a 16-tensor (17 with an untied head) checkpoint with W + s B A for every targeted
matrix: the trainers, dev.sample and dev.export_hf use it unchanged. export-peft writes the
transformers export of the base model (dev.export_hf) into OUT_DIR/base and a PEFT adapter folder
(adapter_config.json, adapter_model.safetensors, saved by PEFT itself) into OUT_DIR, which
peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(OUT_DIR/base), OUT_DIR) loads.
Every failure is a UserError naming the file.
"""

import argparse
import dataclasses
import os
import sys

import numpy as np

from dev.binheader import HEADER_BYTES, HEADER_INTS, check_size, read_header, write_file_atomic
from dev.checkpoint import read_checkpoint, read_checkpoint_init, write_checkpoint
from dev.errors import UserError, cli_main

MAGIC = 20261127
VERSION = 1
MAX_RANK = 4096
TARGETS = ("qkvw", "attprojw", "fcw", "fcprojw")
HF_MODULES = {"qkvw": "attn.c_attn", "attprojw": "attn.c_proj", "fcw": "mlp.c_fc", "fcprojw": "mlp.c_proj"}
FIX = "Write it with a trainer run with --lora-rank (or check the path)."


class AdapterError(UserError):
    """An adapter file is missing, malformed, or not for this base model."""


def target_dims(target, C):
    """(in, out) of a target's matrix for C channels."""
    return {"qkvw": (C, 3 * C), "attprojw": (C, C), "fcw": (C, 4 * C), "fcprojw": (4 * C, C)}[target]


def adapter_shapes(rank, targets, L, C):
    """dict "qkvw.A" -> (L, r, in), "qkvw.B" -> (L, out, r), ... in file order."""
    shapes = {}
    for t in TARGETS:
        if t in targets:
            i, o = target_dims(t, C)
            shapes[f"{t}.A"] = (L, rank, i)
            shapes[f"{t}.B"] = (L, o, rank)
    return shapes


def hash_words(floats):
    """llmc/utils.h hash_words over a float32 array's 32-bit words (64-bit FNV-1a style)."""
    words = np.ascontiguousarray(floats, dtype="<f4").reshape(-1).view("<u4").tolist()
    h, prime, mask = 1469598103934665603, 1099511628211, (1 << 64) - 1
    for w in words:
        h = ((h ^ w) * prime) & mask
    return h


def model_checksum(config, params):
    """hash_words of a checkpoint's P floats, in file order (what the adapter header holds)."""
    from dev.checkpoint import param_shapes
    return hash_words(np.concatenate([np.asarray(params[n], dtype="<f4").reshape(-1) for n in param_shapes(config)]))


@dataclasses.dataclass
class Adapter:
    rank: int
    alpha: float
    targets: tuple
    L: int
    C: int
    base_checksum: int
    tensors: dict  # name ("qkvw.A", ...) -> float32 array of adapter_shapes

    @property
    def scale(self):
        return self.alpha / self.rank

    def delta(self, target):
        """s B A per layer: (L, out, in) float64."""
        A = self.tensors[f"{target}.A"].astype(np.float64)
        B = self.tensors[f"{target}.B"].astype(np.float64)
        return self.scale * np.einsum("lor,lri->loi", B, A)


def targets_from_mask(mask):
    return tuple(t for k, t in enumerate(TARGETS) if (mask >> k) & 1)


def mask_of(targets):
    return sum(1 << k for k, t in enumerate(TARGETS) if t in targets)


def write_adapter(path, adapter):
    """Atomically write an adapter file (used by tests and tools; the trainers write their own)."""
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = [MAGIC, VERSION, adapter.rank]
    header[3] = np.array([adapter.alpha], dtype="<f4").view("<i4")[0]
    header[4:7] = [mask_of(adapter.targets), adapter.L, adapter.C]
    header[7:9] = np.array([adapter.base_checksum], dtype="<u8").view("<i4")
    shapes = adapter_shapes(adapter.rank, adapter.targets, adapter.L, adapter.C)
    bodies = []
    for name, shape in shapes.items():
        arr = np.ascontiguousarray(adapter.tensors[name], dtype="<f4")
        if arr.shape != shape:
            raise ValueError(f"write_adapter: {name} has shape {arr.shape}, expected {shape}")
        bodies.append(arr)
    write_file_atomic(path, header, bodies)


def read_adapter(path):
    """Read and check an adapter file: an Adapter (the base model is checked by check_base)."""
    header, size = read_header(path, "LoRA adapter", MAGIC, VERSION, AdapterError, FIX)
    rank, mask, L, C = (int(header[i]) for i in (2, 4, 5, 6))
    alpha = float(header[3:4].view("<f4")[0])
    if not (1 <= rank <= MAX_RANK) or not (0 < mask < 16) or not np.isfinite(alpha) or alpha <= 0 or L < 1 or C < 1:
        raise AdapterError(f"LoRA adapter {path} has an invalid header: rank={rank} (1..{MAX_RANK}), "
                           f"alpha={alpha} (> 0), target mask={mask} (1..15), L={L}, C={C}. {FIX}")
    if rank > C:
        raise AdapterError(f"LoRA adapter {path}: rank {rank} is more than the model's C={C}. {FIX}")
    if header[9:].any():
        raise AdapterError(f"LoRA adapter {path} has non-zero reserved header slots. {FIX}")
    checksum = int(header[7:9].view("<u8")[0])
    targets = targets_from_mask(mask)
    shapes = adapter_shapes(rank, targets, L, C)
    Q = sum(int(np.prod(s)) for s in shapes.values())
    check_size(path, "LoRA adapter", size, HEADER_BYTES + 4 * Q,
               f"1024-byte header + 4 * {Q} adapter floats for rank {rank}", AdapterError, FIX)
    flat = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    if not np.all(np.isfinite(flat)):
        raise AdapterError(f"LoRA adapter {path} holds NaN or inf values: the run that wrote it diverged; "
                           f"use an earlier adapter file")
    tensors, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        tensors[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    return Adapter(rank, alpha, targets, L, C, checksum, tensors)


def check_base(adapter, adapter_path, config, params, model_path):
    """The adapter must belong to this base model (dimensions and checksum), as the trainers check."""
    if (adapter.L, adapter.C) != (config.n_layer, config.n_embd):
        raise AdapterError(f"LoRA adapter {adapter_path} is for a model with L={adapter.L} C={adapter.C}, but "
                           f"{model_path} has L={config.n_layer} C={config.n_embd}: use the base model it "
                           f"was trained on")
    if model_checksum(config, params) != adapter.base_checksum:
        raise AdapterError(f"LoRA adapter {adapter_path} was trained on another base model than {model_path} "
                           f"(the base model's checksum differs): use the base model it was trained on")


def load_pair(model_path, adapter_path):
    config, params = read_checkpoint(model_path)
    adapter = read_adapter(adapter_path)
    check_base(adapter, adapter_path, config, params, model_path)
    return config, params, adapter


def merged_params(params, adapter):
    """The parameters with W + s B A for every targeted matrix (computed in float64, rounded once)."""
    out = {k: np.array(v, dtype=np.float32) for k, v in params.items()}
    for t in adapter.targets:
        out[t] = (params[t].astype(np.float64) + adapter.delta(t)).astype(np.float32)
    return out


def merge(model_path, adapter_path, out_path):
    config, params, adapter = load_pair(model_path, adapter_path)
    merged = merged_params(params, adapter)
    write_checkpoint(out_path, config, merged, init=read_checkpoint_init(model_path))
    return config, adapter


def peft_model(hf_model, adapter):
    """A peft model around hf_model (transformers' GPT2LMHeadModel) whose LoRA weights are the
    adapter's: LoraConfig(r, lora_alpha, target_modules HF_MODULES, dropout 0, fan_in_fan_out)."""
    import torch
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=0.0, bias="none",
                     target_modules=[HF_MODULES[t] for t in adapter.targets], fan_in_fan_out=True,
                     task_type="CAUSAL_LM")
    model = get_peft_model(hf_model, cfg)
    dtype = next(hf_model.parameters()).dtype
    with torch.no_grad():
        for t in adapter.targets:
            for layer in range(adapter.L):
                mod = model.base_model.model.transformer.h[layer].get_submodule(HF_MODULES[t])
                mod.lora_A["default"].weight.copy_(torch.from_numpy(adapter.tensors[f"{t}.A"][layer]).to(dtype))
                mod.lora_B["default"].weight.copy_(torch.from_numpy(adapter.tensors[f"{t}.B"][layer]).to(dtype))
    return model


def peft_adapter_grads(model, adapter):
    """The LoRA gradients of a peft model (after backward) in the adapter file's layout."""
    out = {}
    for t in adapter.targets:
        for part in ("A", "B"):
            out[f"{t}.{part}"] = np.stack([
                getattr(model.base_model.model.transformer.h[layer].get_submodule(HF_MODULES[t]), f"lora_{part}")
                ["default"].weight.grad.detach().double().numpy() for layer in range(adapter.L)])
    return out


def export_peft(model_path, adapter_path, out_dir, force=False):
    """OUT_DIR/base: the transformers export of the base model; OUT_DIR: PEFT's adapter folder."""
    from dev.export_hf import export
    from dev.model import GPT, to_hf
    config, params, adapter = load_pair(model_path, adapter_path)
    if os.path.exists(os.path.join(out_dir, "adapter_config.json")) and not force:
        raise UserError(f"{out_dir} already holds a PEFT adapter; pass --force to replace it")
    base_dir = os.path.join(out_dir, "base")
    export(model_path, base_dir, True)
    model = peft_model(to_hf(GPT.from_checkpoint(model_path)), adapter)
    model.peft_config["default"].base_model_name_or_path = base_dir
    try:
        model.save_pretrained(out_dir)
    except OSError as e:
        raise UserError(f"could not write the PEFT adapter to {out_dir}: {e.strerror or e}") from e
    return config, adapter, base_dir


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m dev.lora", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="write a checkpoint with the adapters merged into the base weights")
    m.add_argument("--model", required=True, help="the base model the adapters were trained on")
    m.add_argument("--adapter", required=True, help="an adapter file (a LoRA run's adapter_NNNNNN.bin)")
    m.add_argument("--out", required=True, help="the merged checkpoint to write")
    e = sub.add_parser("export-peft", help="write a PEFT adapter folder and the base model's transformers export")
    e.add_argument("--model", required=True, help="the base model the adapters were trained on")
    e.add_argument("--adapter", required=True, help="an adapter file (a LoRA run's adapter_NNNNNN.bin)")
    e.add_argument("--out-dir", required=True, help="folder for the PEFT adapter (the base model goes to OUT_DIR/base)")
    e.add_argument("--force", action="store_true", help="replace an existing export")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "merge":
        config, adapter = merge(args.model, args.adapter, args.out)
        print(f"merged {args.adapter} (rank {adapter.rank}, alpha {adapter.alpha:g}, on {','.join(adapter.targets)}) "
              f"into {args.model}: wrote {args.out} ({config.describe()})")
    else:
        config, adapter, base_dir = export_peft(args.model, args.adapter, args.out_dir, args.force)
        print(f"wrote the PEFT adapter {args.out_dir} (rank {adapter.rank}, alpha {adapter.alpha:g}, modules "
              f"{', '.join(HF_MODULES[t] for t in adapter.targets)}) and the base model {base_dir}")
        print(f"load with: PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained({base_dir!r}), "
              f"{args.out_dir!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
