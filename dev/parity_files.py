"""Parity files (ours): one batch in, gradients or per-step losses out.

They let the trainers be checked against the reference model without scraping
stdout (README, "File formats"):

  parity batch      magic 20261123 v1: [2] B, [3] T, [4] has_mask; then B*T int32
                    inputs, B*T int32 targets, and if has_mask B*T int32 mask
                    (1 = the position counts in the loss).
  parity gradients  magic 20261124 v1: [2] B, [3] T, [4] Vp, [5] P, [6] L, [7] C,
                    [8] untied_head, [9] LoRA rank (0: none), [10] LoRA target mask;
                    then float32 loss, B*T*Vp float32 logits, then the 16 gradient
                    tensors (and lm_head when untied; P floats) in checkpoint order, or
                    with LoRA ([5] = Q) the adapters' gradients in adapter-file order
                    (dev/lora.py; read back keyed "qkvw.A", "qkvw.B", ...).
  parity losses     magic 20261125 v1: [2] N; then N float32 losses.
  parity attention  magic 20261128 v1: [2] L, [3] B, [4] NH, [5] T; then the attention
                    weights (L, B, NH, T, T) float32 (the CPU trainer's --parity-attention).

maxT is not stored in the gradients file: it follows from P, Vp, L and C
(P = Vp*C + maxT*C + L*(12*C*C + 13*C) + 2*C). Readers bound every header
field before computing a size (B*T at most 2^24 as llmc/parity.h; the model
dimensions as llmc/gpt2_params.h) and raise ParityFileError (a UserError);
writers are atomic and raise ValueError on bad arrays.
"""

import collections

import numpy as np

from dev.binheader import HEADER_BYTES, check_size, make_header, read_header, write_file_atomic
from dev.checkpoint import (LM_HEAD, MAX_CHANNELS, MAX_LAYERS, MAX_SEQ_LEN, MAX_VOCAB, PARAM_NAMES,
                            ModelConfig, param_shapes)
from dev.errors import UserError
from dev.train_limits import MAX_TOKENS_PER_STEP

BATCH_MAGIC, BATCH_VERSION = 20261123, 1
GRADS_MAGIC, GRADS_VERSION = 20261124, 1
LOSSES_MAGIC, LOSSES_VERSION = 20261125, 1
ATTENTION_MAGIC, ATTENTION_VERSION = 20261128, 1

FIX = "Re-create it with the tool or test that wrote it (or check the path)."

ParityBatch = collections.namedtuple("ParityBatch", ["inputs", "targets", "mask"])
ParityBatch.__doc__ = "inputs, targets: (B, T) int32; mask: (B, T) int32 of 0/1, or None."


class ParityFileError(UserError):
    """A parity file is missing, malformed or inconsistent."""


def _numpy(x):
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def write_parity_batch(path, inputs, targets, mask=None):
    """Atomically write one batch: inputs and targets (B, T) ints, optional mask (B, T) 0/1."""
    inputs, targets = _numpy(inputs), _numpy(targets)
    if inputs.ndim != 2 or targets.shape != inputs.shape:
        raise ValueError(f"write_parity_batch: inputs {inputs.shape} and targets "
                         f"{targets.shape} must both be (B, T)")
    B, T = inputs.shape
    bodies = [inputs.astype("<i4"), targets.astype("<i4")]
    if mask is not None:
        mask = _numpy(mask)
        if mask.shape != inputs.shape or not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"write_parity_batch: mask must be (B, T) of 0/1, got {mask.shape}")
        bodies.append(mask.astype("<i4"))
    header = make_header(BATCH_MAGIC, BATCH_VERSION, [B, T, 0 if mask is None else 1])
    write_file_atomic(path, header, bodies)


def read_parity_batch(path):
    """Read a parity batch: ParityBatch(inputs, targets, mask or None), each (B, T) int32."""
    header, size = read_header(path, "parity batch", BATCH_MAGIC, BATCH_VERSION,
                               ParityFileError, FIX)
    B, T, has_mask = (int(x) for x in header[2:5])
    if B < 1 or T < 1 or B * T > MAX_TOKENS_PER_STEP or has_mask not in (0, 1):
        raise ParityFileError(f"parity batch {path} has header B={B} T={T} has_mask={has_mask}, "
                              f"expected B >= 1, T >= 1, B*T at most {MAX_TOKENS_PER_STEP}, "
                              f"has_mask 0 or 1. {FIX}")
    n = B * T
    check_size(path, "parity batch", size, HEADER_BYTES + 4 * n * (2 + has_mask),
               f"1024-byte header + 4 * B*T * {2 + has_mask} with B={B} T={T}",
               ParityFileError, FIX)
    body = np.fromfile(path, dtype="<i4", offset=HEADER_BYTES).reshape(2 + has_mask, B, T)
    mask = body[2] if has_mask else None
    if mask is not None and not np.all((mask == 0) | (mask == 1)):
        raise ParityFileError(f"parity batch {path}: mask values must be 0 or 1. {FIX}")
    return ParityBatch(body[0], body[1], mask)


def config_from_grads_header(P, Vp, L, C):
    """Recover maxT from P, Vp, L, C; returns maxT or None when P does not fit."""
    rest = P - Vp * C - L * (12 * C * C + 13 * C) - 2 * C
    if C <= 0 or rest <= 0 or rest % C != 0 or rest // C > MAX_SEQ_LEN:
        return None
    return rest // C


def write_parity_grads(path, loss, logits, grads):
    """Atomically write loss (float), logits (B, T, Vp) and grads (dict of the 16 tensors, and
    lm_head for a model with an untied head; header[8] says which).

    grads values may be numpy arrays or torch tensors; every one of the 16 must
    be present (pass zeros for a tensor that gets no gradient, e.g. qkvb with
    the QKV bias off).
    """
    logits = _numpy(logits).astype("<f4")
    if logits.ndim != 3:
        raise ValueError(f"write_parity_grads: logits must be (B, T, Vp), got {logits.shape}")
    B, T, Vp = logits.shape
    missing = [n for n in PARAM_NAMES if n not in grads or grads[n] is None]
    if missing:
        raise ValueError(f"write_parity_grads: missing gradients {missing}")
    untied = grads.get(LM_HEAD) is not None
    names = list(PARAM_NAMES) + ([LM_HEAD] if untied else [])
    arrays = [_numpy(grads[n]).astype("<f4") for n in names]
    L, C = arrays[PARAM_NAMES.index("qkvw")].shape[0], arrays[PARAM_NAMES.index("lnfw")].shape[0]
    maxT = arrays[PARAM_NAMES.index("wpe")].shape[0]
    # V only matters through Vp here; any V with the same Vp gives the same shapes.
    config = ModelConfig(max_seq_len=maxT, vocab_size=Vp, n_layer=L, n_head=1, n_embd=C, untied_head=untied)
    for name, arr in zip(names, arrays):
        if tuple(arr.shape) != param_shapes(config)[name]:
            raise ValueError(f"write_parity_grads: gradient {name} has shape {arr.shape}, "
                             f"expected {param_shapes(config)[name]}")
    P = sum(a.size for a in arrays)
    header = make_header(GRADS_MAGIC, GRADS_VERSION, [B, T, Vp, P, L, C, int(untied)])
    write_file_atomic(path, header, [np.array([loss], dtype="<f4"), logits] + arrays)


def read_parity_grads(path):
    """Read parity gradients: dict(loss=float, logits=(B, T, Vp) float32, grads=dict name->array)."""
    header, size = read_header(path, "parity gradients", GRADS_MAGIC, GRADS_VERSION,
                               ParityFileError, FIX)
    B, T, Vp, P, L, C, untied = (int(x) for x in header[2:9])
    lora_rank, lora_mask = int(header[9]), int(header[10])
    if lora_rank > 0:
        return _read_lora_grads(path, header, size, B, T, Vp, P, L, C, lora_rank, lora_mask)
    if untied not in (0, 1):
        raise ParityFileError(f"parity gradients {path} has header[8] (untied_head) = {untied}, expected "
                              f"0 or 1. {FIX}")
    if (min(B, T, Vp, P, L, C) < 1 or Vp % 128 != 0 or B * T > MAX_TOKENS_PER_STEP
            or Vp > MAX_VOCAB or L > MAX_LAYERS or C > MAX_CHANNELS):
        raise ParityFileError(f"parity gradients {path} has header B={B} T={T} Vp={Vp} P={P} "
                              f"L={L} C={C}, expected all >= 1, B*T at most {MAX_TOKENS_PER_STEP}, "
                              f"Vp a multiple of 128 and at most {MAX_VOCAB}, L at most "
                              f"{MAX_LAYERS}, C at most {MAX_CHANNELS}. {FIX}")
    maxT = config_from_grads_header(P - untied * Vp * C, Vp, L, C)
    if maxT is None:
        raise ParityFileError(
            f"parity gradients {path} is inconsistent: P={P} does not equal "
            f"Vp*C + maxT*C + L*(12*C*C + 13*C) + 2*C for any positive maxT "
            f"(Vp={Vp}, L={L}, C={C}). {FIX}")
    check_size(path, "parity gradients", size, HEADER_BYTES + 4 * (1 + B * T * Vp + P),
               f"1024-byte header + 4 * (1 + B*T*Vp + P) with B={B} T={T} Vp={Vp} P={P}",
               ParityFileError, FIX)
    body = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    loss = float(body[0])
    logits = body[1:1 + B * T * Vp].reshape(B, T, Vp)
    config = ModelConfig(max_seq_len=maxT, vocab_size=Vp, n_layer=L, n_head=1, n_embd=C, untied_head=untied == 1)
    grads, offset = {}, 1 + B * T * Vp
    for name, shape in param_shapes(config).items():
        n = int(np.prod(shape))
        grads[name] = body[offset:offset + n].reshape(shape)
        offset += n
    return dict(loss=loss, logits=logits, grads=grads)


def _read_lora_grads(path, header, size, B, T, Vp, Q, L, C, rank, mask):
    """A LoRA run's parity gradients ([9] rank, [10] target mask): grads = the adapters' ("qkvw.A", ...)."""
    from dev.lora import adapter_shapes, targets_from_mask
    if (min(B, T, Vp, Q, L, C) < 1 or not 0 < mask < 16 or rank > C or B * T > MAX_TOKENS_PER_STEP
            or Vp > MAX_VOCAB or L > MAX_LAYERS or C > MAX_CHANNELS):
        raise ParityFileError(f"parity gradients {path} has header B={B} T={T} Vp={Vp} Q={Q} L={L} C={C} "
                              f"LoRA rank={rank} mask={mask}, expected positive sizes within the bounds, "
                              f"mask 1..15 and rank at most C. {FIX}")
    shapes = adapter_shapes(rank, targets_from_mask(mask), L, C)
    want = sum(int(np.prod(s)) for s in shapes.values())
    if want != Q:
        raise ParityFileError(f"parity gradients {path} is inconsistent: Q={Q}, but rank {rank} on mask {mask} "
                              f"with L={L} C={C} gives {want}. {FIX}")
    check_size(path, "parity gradients", size, HEADER_BYTES + 4 * (1 + B * T * Vp + Q),
               f"1024-byte header + 4 * (1 + B*T*Vp + Q) with B={B} T={T} Vp={Vp} Q={Q}", ParityFileError, FIX)
    body = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    grads, offset = {}, 1 + B * T * Vp
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        grads[name] = body[offset:offset + n].reshape(shape)
        offset += n
    return dict(loss=float(body[0]), logits=body[1:1 + B * T * Vp].reshape(B, T, Vp), grads=grads)


def read_parity_attention(path):
    """The attention weights a trainer wrote with --parity-attention: float32 (L, B, NH, T, T)."""
    header, size = read_header(path, "parity attention", ATTENTION_MAGIC, ATTENTION_VERSION, ParityFileError, FIX)
    L, B, NH, T = (int(x) for x in header[2:6])
    if min(L, B, NH, T) < 1 or L > MAX_LAYERS or NH > MAX_CHANNELS or B * T > MAX_TOKENS_PER_STEP:
        raise ParityFileError(f"parity attention {path} has header L={L} B={B} NH={NH} T={T}, expected positive "
                              f"sizes within the bounds. {FIX}")
    n = L * B * NH * T * T
    check_size(path, "parity attention", size, HEADER_BYTES + 4 * n,
               f"1024-byte header + 4 * L*B*NH*T*T with L={L} B={B} NH={NH} T={T}", ParityFileError, FIX)
    return np.fromfile(path, dtype="<f4", offset=HEADER_BYTES).reshape(L, B, NH, T, T)


def write_parity_losses(path, losses):
    """Atomically write a 1-D sequence of per-step losses (float32)."""
    arr = _numpy(losses).astype("<f4").reshape(-1)
    write_file_atomic(path, make_header(LOSSES_MAGIC, LOSSES_VERSION, [arr.size]), [arr])


def read_parity_losses(path):
    """Read parity losses: np.float32 array (N,)."""
    header, size = read_header(path, "parity losses", LOSSES_MAGIC, LOSSES_VERSION,
                               ParityFileError, FIX)
    n = int(header[2])
    if n < 0:
        raise ParityFileError(f"parity losses {path} has N={n}, expected >= 0. {FIX}")
    check_size(path, "parity losses", size, HEADER_BYTES + 4 * n,
               f"1024-byte header + 4 * {n} losses", ParityFileError, FIX)
    return np.fromfile(path, dtype="<f4", offset=HEADER_BYTES, count=n)
