"""Model checkpoint: llm.c's fp32 version-3 file, plus the model configuration.

Format (README, "File formats"): a 256-int32 header [0] magic 20240326,
[1] version 3, [2] maxT, [3] V, [4] L, [5] NH, [6] C, [7] Vp, [8] no_qkv_bias
(0 = llm.c default, 1 = qkvb is all zero and never trained), [9] the initialisation the
weights started from (provenance: 0 not recorded, 1 gpt2, 2 pytorch; INIT_CODES), [10]
untied_head (0/1: 1 adds a 17th tensor, lm_head (Vp, C), the classifier's own weight), the
rest 0; then the fp32 tensors of param_shapes() in order (PARAM_NAMES, and lm_head). The
file is exactly 1024 + 4*P bytes. Vp is V rounded up to a multiple of 128 and
rows V..Vp-1 of wte are zero (written so; not enforced on read).

read_checkpoint validates everything (magic, version, every dimension
positive and within the bounds of llmc/gpt2_params.h (MAX_SEQ_LEN, MAX_VOCAB,
MAX_LAYERS, MAX_CHANNELS, NH <= C) before any size is computed, C % NH == 0,
Vp, no_qkv_bias flag, exact size) and raises CheckpointError
(a UserError) naming what was expected and found. write_checkpoint is atomic
(temp file + rename) and checks every tensor's shape.
"""

import dataclasses

import numpy as np

from dev.binheader import HEADER_BYTES, check_size, make_header, read_header, write_file_atomic
from dev.errors import UserError

# header[9]: how the weights a training run starts from were drawn (create_model.py --init)
INIT_CODES = {"not recorded": 0, "gpt2": 1, "pytorch": 2}
CHECKPOINT_MAGIC = 20240326
CHECKPOINT_VERSION = 3
# llm.c's train_gpt2.py and train_gpt2.cu also write version 5: the same header and tensors
# in bfloat16. python -m dev.convert_llmc turns one into version 3 (read_llmc_bf16 below).
LLMC_BF16_VERSION = 5
CONVERT_BF16_FIX = "convert it to this project's fp32 version 3 with: python -m dev.convert_llmc {path} OUT.bin"
VOCAB_PAD_MULTIPLE = 128
# Bounds on every dimension (llmc/gpt2_params.h holds the same): far above any model
# trainable here, and they keep every size derived from them far from overflow (P < 2^49).
MAX_SEQ_LEN = 1 << 20   # maxT
MAX_VOCAB = 65536       # V: token shards store uint16 ids
MAX_LAYERS = 4096       # L
MAX_CHANNELS = 65536    # C (and NH <= C)

# llm.c's 16 tensors; a model with an untied head has LM_HEAD after them (param_shapes)
PARAM_NAMES = (
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
)
LM_HEAD = "lm_head"

FIX = "Re-create it with create_model.py (or check the path)."


class CheckpointError(UserError):
    """A model checkpoint file is missing, malformed or inconsistent."""


def round_up(x, multiple):
    return ((x + multiple - 1) // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """GPT-2 hyperparameters. C = n_embd, L = n_layer, NH = n_head, V = vocab_size."""

    max_seq_len: int   # maxT: rows of wpe, the longest sequence the model takes
    vocab_size: int    # V: real tokens; the loss and sampling use only these
    n_layer: int       # L
    n_head: int        # NH
    n_embd: int        # C
    qkv_bias: bool = True  # False: qkvb is held at zero (header[8] no_qkv_bias = 1)
    untied_head: bool = False  # True: the classifier has its own weight lm_head (header[10] = 1)

    @property
    def padded_vocab_size(self):
        """Vp: V rounded up to a multiple of 128 (rows of wte, columns of the logits)."""
        return round_up(self.vocab_size, VOCAB_PAD_MULTIPLE)

    @property
    def head_size(self):
        """HS = C / NH."""
        return self.n_embd // self.n_head

    @property
    def num_parameters(self):
        """P: total floats in the 16 tensors (padded wte rows included)."""
        return num_parameters(self)

    def problems(self):
        """List of human-readable problems with these values (empty when valid)."""
        out = []
        for field in ("max_seq_len", "vocab_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                out.append(f"{field} = {v!r} must be a positive integer")
        if out:
            return out
        for field, bound, why in (("max_seq_len", MAX_SEQ_LEN, ""),
                                  ("vocab_size", MAX_VOCAB, ": token shards store uint16 ids"),
                                  ("n_layer", MAX_LAYERS, ""), ("n_embd", MAX_CHANNELS, "")):
            v = getattr(self, field)
            if v > bound:
                out.append(f"{field} = {v} exceeds {bound}, the largest the trainers "
                           f"accept{why}; pass at most {bound}")
        if not out and self.n_embd % self.n_head != 0:
            out.append(f"n_embd (C) = {self.n_embd} is not divisible by "
                       f"n_head (NH) = {self.n_head}")
        return out

    def validate(self, error_cls=UserError, where="model config"):
        """Raise error_cls listing every problem; return self when valid."""
        probs = self.problems()
        if probs:
            raise error_cls(f"{where}: " + "; ".join(probs))
        return self

    def describe(self):
        return (f"maxT={self.max_seq_len} V={self.vocab_size} Vp={self.padded_vocab_size} "
                f"L={self.n_layer} NH={self.n_head} C={self.n_embd} HS={self.head_size} "
                f"qkv_bias={'on' if self.qkv_bias else 'off'}"
                + (" head=untied" if self.untied_head else ""))


def param_shapes(config):
    """The tensor shapes in checkpoint order: dict name -> tuple (the 16 of PARAM_NAMES, then
    lm_head with an untied head)."""
    maxT, L, C = config.max_seq_len, config.n_layer, config.n_embd
    Vp = config.padded_vocab_size
    return {
        "wte": (Vp, C),
        "wpe": (maxT, C),
        "ln1w": (L, C),
        "ln1b": (L, C),
        "qkvw": (L, 3 * C, C),
        "qkvb": (L, 3 * C),
        "attprojw": (L, C, C),
        "attprojb": (L, C),
        "ln2w": (L, C),
        "ln2b": (L, C),
        "fcw": (L, 4 * C, C),
        "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C),
        "fcprojb": (L, C),
        "lnfw": (C,),
        "lnfb": (C,),
        **({LM_HEAD: (Vp, C)} if config.untied_head else {}),
    }


def num_parameters(config):
    """P = Vp*C + maxT*C + L*(12*C*C + 13*C) + 2*C, computed without allocating."""
    return sum(int(np.prod(s)) for s in param_shapes(config).values())


def checkpoint_file_size(config):
    """Exact checkpoint size in bytes: 1024 + 4*P."""
    return HEADER_BYTES + 4 * num_parameters(config)


def config_from_header(header, path="<header>"):
    """Build and validate a ModelConfig from a checkpoint header (already magic/version checked)."""
    maxT, V, L, NH, C, Vp, no_bias = (int(x) for x in header[2:9])
    untied = int(header[10])
    named = dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp)
    bad = [f"{k}={v}" for k, v in named.items() if v <= 0]
    if bad:
        raise CheckpointError(
            f"model checkpoint {path} has non-positive dimensions in its header: "
            f"{', '.join(bad)} (expected all > 0). {FIX}")
    if maxT > MAX_SEQ_LEN or V > MAX_VOCAB or L > MAX_LAYERS or C > MAX_CHANNELS or NH > C:
        raise CheckpointError(
            f"model checkpoint {path} has dimensions out of range in its header: maxT={maxT} "
            f"(at most {MAX_SEQ_LEN}), V={V} (at most {MAX_VOCAB}), L={L} (at most {MAX_LAYERS}), "
            f"C={C} (at most {MAX_CHANNELS}), NH={NH} (at most C). {FIX}")
    if C % NH != 0:
        raise CheckpointError(
            f"model checkpoint {path} is inconsistent: C={C} is not divisible by NH={NH}. {FIX}")
    expected_vp = round_up(V, VOCAB_PAD_MULTIPLE)
    if Vp != expected_vp:
        raise CheckpointError(
            f"model checkpoint {path} is inconsistent: Vp={Vp}, expected {expected_vp} "
            f"(V={V} rounded up to a multiple of {VOCAB_PAD_MULTIPLE}). {FIX}")
    if int(header[9]) not in INIT_CODES.values():
        raise CheckpointError(
            f"model checkpoint {path} has header[9] (initialisation) = {int(header[9])}, expected 0 "
            f"(not recorded), 1 (gpt2) or 2 (pytorch). {FIX}")
    if no_bias not in (0, 1):
        raise CheckpointError(
            f"model checkpoint {path} has header[8] (no_qkv_bias) = {no_bias}, expected 0 or 1. {FIX}")
    if untied not in (0, 1):
        raise CheckpointError(
            f"model checkpoint {path} has header[10] (untied_head) = {untied}, expected 0 or 1. {FIX}")
    return ModelConfig(max_seq_len=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C,
                       qkv_bias=(no_bias == 0), untied_head=(untied == 1))


def _read_checkpoint_header(path):
    """The checked header and size of a version-3 file; a version-5 (bf16) file names the converter."""
    header, size = read_header(path, "model checkpoint", CHECKPOINT_MAGIC, None, CheckpointError, FIX)
    version = int(header[1])
    if version == LLMC_BF16_VERSION:
        raise CheckpointError(
            f"model checkpoint {path} has version 5: llm.c's bfloat16 format, which these trainers do not "
            f"read; {CONVERT_BF16_FIX.format(path=path)}")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"model checkpoint file {path} has version {version}, expected {CHECKPOINT_VERSION}. {FIX}")
    return header, size


def read_checkpoint_config(path):
    """Read and validate only the header (and the exact size): return ModelConfig."""
    header, size = _read_checkpoint_header(path)
    config = config_from_header(header, path)
    P = num_parameters(config)
    check_size(path, "model checkpoint", size, HEADER_BYTES + 4 * P,
               f"1024-byte header + 4 * {P} parameters for {config.describe()}",
               CheckpointError, FIX)
    return config


def _split_params(flat, config):
    """dict name -> view of the flat float32 array, in param_shapes(config) order."""
    params, offset = {}, 0
    for name, shape in param_shapes(config).items():
        n = int(np.prod(shape))
        params[name] = flat[offset:offset + n].reshape(shape)
        offset += n
    return params


def read_checkpoint(path):
    """Read a checkpoint: (ModelConfig, dict name -> np.float32 array of param_shapes)."""
    config = read_checkpoint_config(path)
    params = _split_params(np.fromfile(path, dtype="<f4", offset=HEADER_BYTES), config)
    if not config.qkv_bias and np.any(params["qkvb"] != 0):
        raise CheckpointError(
            f"model checkpoint {path} says no_qkv_bias=1 but its qkvb tensor is not all "
            f"zero (max |qkvb| = {float(np.abs(params['qkvb']).max()):.3g}). {FIX}")
    bad = [n for n, a in params.items() if not np.all(np.isfinite(a))]
    if bad:
        raise CheckpointError(
            f"model checkpoint {path} holds NaN or inf values in {', '.join(bad)}: "
            f"the run that wrote it diverged. Use an earlier checkpoint.")
    return config, params


def _as_float32(name, value):
    """numpy float32 view/copy of a numpy array or torch tensor."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype="<f4")


def read_checkpoint_init(path):
    """The initialisation recorded in header[9]: "gpt2", "pytorch" or "not recorded"."""
    header, _ = _read_checkpoint_header(path)
    config_from_header(header, path)
    return {v: k for k, v in INIT_CODES.items()}[int(header[9])]


def write_checkpoint(path, config, params, init="not recorded"):
    """Atomically write `params` (dict name -> array/tensor of param_shapes(config)); `init`
    (a key of INIT_CODES) goes into header[9].

    Raises ValueError (a programming error, not user input) when a tensor is
    missing, extra, mis-shaped, or qkvb is non-zero with config.qkv_bias False.
    """
    config.validate(ValueError)
    shapes = param_shapes(config)
    missing = [n for n in shapes if n not in params]
    extra = [n for n in params if n not in shapes]
    if missing or extra:
        raise ValueError(f"write_checkpoint: missing tensors {missing}, unexpected {extra}")
    bodies = []
    for name, shape in shapes.items():
        arr = _as_float32(name, params[name])
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"write_checkpoint: {name} has shape {tuple(arr.shape)}, "
                             f"expected {tuple(shape)} for {config.describe()}")
        bodies.append(arr)
    qkvb = bodies[PARAM_NAMES.index("qkvb")]
    if not config.qkv_bias and np.any(qkvb != 0):
        raise ValueError("write_checkpoint: qkv_bias is off but qkvb is not all zero")
    header = make_header(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, [
        config.max_seq_len, config.vocab_size, config.n_layer, config.n_head,
        config.n_embd, config.padded_vocab_size, 0 if config.qkv_bias else 1, INIT_CODES[init],
        1 if config.untied_head else 0])
    write_file_atomic(path, header, bodies)


def read_llmc_bf16(path):
    """Read llm.c's version-5 checkpoint (header as version 3, the 16 tensors in bfloat16):
    (ModelConfig, dict name -> np.float32 array), each value upcast exactly (bf16 is the top
    16 bits of an fp32). Header slots 8.. must be 0, as llm.c writes them (no qkv bias flag,
    no untied head); every value must be finite."""
    header, size = read_header(path, "model checkpoint", CHECKPOINT_MAGIC, None, CheckpointError, FIX)
    if int(header[1]) != LLMC_BF16_VERSION:
        raise CheckpointError(
            f"model checkpoint {path} has version {int(header[1])}, expected 5 (llm.c's bfloat16 format); "
            f"a version-3 file is already this project's fp32 format and needs no conversion.")
    extra = [i for i in range(8, len(header)) if int(header[i]) != 0]
    if extra:
        raise CheckpointError(
            f"model checkpoint {path} (version 5) has non-zero header slots {extra[:8]}; llm.c writes "
            f"only slots 0-7. It is not a file written by llm.c's train_gpt2.py or train_gpt2.cu.")
    config = config_from_header(header, path)
    P = num_parameters(config)
    check_size(path, "model checkpoint", size, HEADER_BYTES + 2 * P,
               f"1024-byte header + 2 * {P} bfloat16 parameters for {config.describe()}",
               CheckpointError, "Re-write it with llm.c (or check the path).")
    raw = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
    params = _split_params((raw.astype("<u4") << 16).view("<f4"), config)
    bad = [n for n, a in params.items() if not np.all(np.isfinite(a))]
    if bad:
        raise CheckpointError(
            f"model checkpoint {path} holds NaN or inf values in {', '.join(bad)}; "
            f"use another checkpoint of that run.")
    return config, params
