"""Reader of the trainers' training-state file (DIR/state_NNNNNN.bin; README "Training state").

Contract: read_train_state(path) -> dict with the header fields (step, total_steps,
num_parameters, B, T, data_epoch, data_cursor, data_batches_per_epoch, data_num_shards, seed,
sampler_rng, model_checksum, elapsed_s, has_init_params, lora, num_trained N, adapter_checksum) and the
float32 arrays m, v (N each: P, or the LoRA adapters' Q with lora = 1) and init_params (N, or None when
has_init_params is 0), after checking magic, version, the header's bounds (llmc/train_state.h: step
and total steps at most 2^30, B*T at most 2^24, T at most 2^20, 1 <= P <= 2^40, has_init_params 0/1,
lora 0/1, N = P without lora and 1..2^40 with it, no init with lora) and the exact size (a UserError
naming the file otherwise). The trainers write this file (llmc/train_state.h);
Python only reads it, for tests and for looking inside a run.
"""

import numpy as np

from dev.binheader import HEADER_BYTES, check_size, read_header
from dev.checkpoint import MAX_SEQ_LEN
from dev.errors import UserError
from dev.train_limits import MAX_STEPS, MAX_TOKENS_PER_STEP

MAGIC = 20261126
VERSION = 1
MAX_PARAMS = 1 << 40  # llmc/train_state.h TRAIN_STATE_MAX_PARAMS
FIX = "Pass a state file written by train_gpt2 or train_gpt2fp32cu (DIR/state_NNNNNN.bin)."


def _u64(h, slot):
    return int(np.uint32(h[slot])) | (int(np.uint32(h[slot + 1])) << 32)


def read_train_state(path):
    h, size = read_header(path, "training state", MAGIC, VERSION, fix=FIX)
    P = _u64(h, 4)
    step, total, B, T, shards, has_init, lora = (int(h[i]) for i in (2, 3, 6, 7, 14, 23, 24))
    N = _u64(h, 25)
    if N == 0 and lora == 0:
        N = P  # a file from before slot 25
    # the bounds of llmc/train_state.h train_state_read_header, before any size is computed
    if (not 0 <= step <= MAX_STEPS or not 1 <= total <= MAX_STEPS or B < 1 or not 1 <= T <= MAX_SEQ_LEN
            or B * T > MAX_TOKENS_PER_STEP or not 1 <= P <= MAX_PARAMS or shards < 0
            or has_init not in (0, 1) or lora not in (0, 1) or not 1 <= N <= MAX_PARAMS
            or (lora == 0 and N != P) or (lora == 1 and has_init == 1)):
        raise UserError(
            f"training state {path} has an invalid header: step={step} total_steps={total} (both at "
            f"most {MAX_STEPS}) B={B} T={T} (B*T at most {MAX_TOKENS_PER_STEP}) P={P} (at most 2^40) "
            f"shards={shards} has_init_params={has_init} lora={lora} N={N} (P without lora). {FIX}")
    n_arrays = 2 + has_init
    check_size(path, "training state", size, HEADER_BYTES + 4 * N * n_arrays,
               f"1024 + 4*N*{n_arrays} with N={N}", fix=FIX)
    body = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    elapsed = np.array([h[21], h[22]], dtype="<i4").view("<f8")[0]
    return {
        "step": int(h[2]), "total_steps": int(h[3]), "num_parameters": P, "B": int(h[6]), "T": int(h[7]),
        "data_epoch": _u64(h, 8), "data_cursor": _u64(h, 10), "data_batches_per_epoch": _u64(h, 12),
        "data_num_shards": int(h[14]), "seed": _u64(h, 15), "sampler_rng": _u64(h, 17),
        "model_checksum": _u64(h, 19), "elapsed_s": float(elapsed), "has_init_params": has_init,
        "lora": lora, "num_trained": N, "adapter_checksum": _u64(h, 27),
        "m": body[:N], "v": body[N:2 * N], "init_params": body[2 * N:3 * N] if has_init else None,
    }
