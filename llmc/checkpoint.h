/*
checkpoint.h: read and write the model checkpoint (llm.c fp32, version 3).

Format (README, "File formats"): 256 int32 header [0] 20240326, [1] 3, [2] maxT,
[3] V, [4] L, [5] NH, [6] C, [7] Vp, [8] no_qkv_bias (0/1), [9] the initialisation the
weights started from (provenance: 0 not recorded, as in llm.c's files; 1 gpt2; 2 pytorch;
create_model.py --init writes it and the trainers keep it), [10] untied_head (0/1: 1 adds
the 17th tensor lm_head (Vp, C) after the 16, which the classifier uses instead of wte), the
rest 0; then the fp32 tensors of gpt2_params.h in order; exactly 1024 + 4*P bytes.

Contract:
- checkpoint_read_config(path, &cfg) validates the header (every dimension
  within the bounds of gpt2_params.h, so no size derived from it can overflow)
  and the exact size and returns P; checkpoint_load(path, &cfg, &P) also reads the tensors into a
  malloc'd block (the caller frees it) and checks that every value is finite
  and that qkvb is zero when no_qkv_bias = 1. Any problem is fatal() with a
  message naming the file, what was found, what was expected and the fix —
  the same checks as dev/checkpoint.py.
- checkpoint_save(path, &cfg, params) writes atomically (temp file, fsync,
  rename): a crash never leaves a half-written checkpoint under `path`. It
  never writes a non-finite value: the trainers stop before (the NaN stop),
  and a call with one is an internal error that writes nothing.
*/
#ifndef LLMC_CHECKPOINT_H
#define LLMC_CHECKPOINT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2_params.h"
#include "utils.h"

#define CHECKPOINT_MAGIC 20240326
#define CHECKPOINT_VERSION 3
#define LLMC_BF16_VERSION 5  // llm.c's bfloat16 files: converted by python -m dev.convert_llmc
#define CHECKPOINT_FIX "Re-create it with create_model.py (or check the path)."
#define INIT_NOT_RECORDED 0
#define INIT_GPT2 1
#define INIT_PYTORCH 2

static inline const char* init_scheme_name(int scheme) {
    return scheme == INIT_GPT2 ? "gpt2" : scheme == INIT_PYTORCH ? "pytorch" : "not recorded";
}

// Validates the header and exact size of the checkpoint at path; fills cfg and
// returns the number of parameters P.
static inline size_t checkpoint_read_config(const char* path, GPT2Config* cfg) {
    int32_t header[HEADER_INTS];
    long long size = read_header_checked(path, "model checkpoint", CHECKPOINT_MAGIC, -1, header,
                                         CHECKPOINT_FIX);
    if (header[1] == LLMC_BF16_VERSION) {
        fatal("model checkpoint %s has version 5: llm.c's bfloat16 format, which this trainer does not "
              "read; convert it to fp32 version 3 with: python -m dev.convert_llmc %s OUT.bin", path, path);
    }
    if (header[1] != CHECKPOINT_VERSION) {
        fatal("model checkpoint file %s has version %d, expected %d. %s", path, header[1], CHECKPOINT_VERSION,
              CHECKPOINT_FIX);
    }
    int maxT = header[2], V = header[3], L = header[4], NH = header[5], C = header[6];
    int Vp = header[7], no_bias = header[8], init = header[9], untied = header[10];
    if (maxT <= 0 || V <= 0 || L <= 0 || NH <= 0 || C <= 0 || Vp <= 0) {
        fatal("model checkpoint %s has non-positive dimensions in its header: maxT=%d V=%d L=%d "
              "NH=%d C=%d Vp=%d (expected all > 0). %s", path, maxT, V, L, NH, C, Vp, CHECKPOINT_FIX);
    }
    if (maxT > GPT2_MAX_SEQ_LEN || V > GPT2_MAX_VOCAB || L > GPT2_MAX_LAYERS || C > GPT2_MAX_CHANNELS ||
        NH > C) {
        fatal("model checkpoint %s has dimensions out of range in its header: maxT=%d (at most %d), V=%d "
              "(at most %d), L=%d (at most %d), C=%d (at most %d), NH=%d (at most C). %s", path, maxT,
              GPT2_MAX_SEQ_LEN, V, GPT2_MAX_VOCAB, L, GPT2_MAX_LAYERS, C, GPT2_MAX_CHANNELS, NH, CHECKPOINT_FIX);
    }
    if (C % NH != 0) {
        fatal("model checkpoint %s is inconsistent: C=%d is not divisible by NH=%d. %s",
              path, C, NH, CHECKPOINT_FIX);
    }
    if (Vp != round_up_vocab(V)) {
        fatal("model checkpoint %s is inconsistent: Vp=%d, expected %d (V=%d rounded up to a "
              "multiple of %d). %s", path, Vp, round_up_vocab(V), V, VOCAB_PAD_MULTIPLE, CHECKPOINT_FIX);
    }
    if (no_bias != 0 && no_bias != 1) {
        fatal("model checkpoint %s has header[8] (no_qkv_bias) = %d, expected 0 or 1. %s",
              path, no_bias, CHECKPOINT_FIX);
    }
    if (init < INIT_NOT_RECORDED || init > INIT_PYTORCH) {
        fatal("model checkpoint %s has header[9] (initialisation) = %d, expected 0 (not recorded), 1 (gpt2) "
              "or 2 (pytorch). %s", path, init, CHECKPOINT_FIX);
    }
    if (untied != 0 && untied != 1) {
        fatal("model checkpoint %s has header[10] (untied_head) = %d, expected 0 or 1. %s", path, untied,
              CHECKPOINT_FIX);
    }
    cfg->init_scheme = init;
    cfg->untied_head = untied;
    cfg->max_seq_len = maxT;
    cfg->vocab_size = V;
    cfg->padded_vocab_size = Vp;
    cfg->num_layers = L;
    cfg->num_heads = NH;
    cfg->channels = C;
    cfg->no_qkv_bias = no_bias;
    size_t sizes[NUM_PARAMETER_TENSORS];
    size_t P = fill_param_sizes(sizes, cfg);
    char what[256];
    snprintf(what, sizeof(what), "1024-byte header + 4 * %zu parameters for maxT=%d V=%d L=%d "
             "NH=%d C=%d", P, maxT, V, L, NH, C);
    check_file_size(path, "model checkpoint", size, (long long)(HEADER_BYTES + 4 * P), what,
                    CHECKPOINT_FIX);
    return P;
}

// Reads a whole checkpoint: returns a malloc'd block of P floats (the 16
// tensors in order) and fills cfg and *num_parameters.
static inline float* checkpoint_load(const char* path, GPT2Config* cfg, size_t* num_parameters) {
    size_t P = checkpoint_read_config(path, cfg);
    float* params = (float*)mallocCheck(P * sizeof(float));
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    freadCheck(params, sizeof(float), P, fp);
    fcloseCheck(fp);
    size_t sizes[NUM_PARAMETER_TENSORS];
    fill_param_sizes(sizes, cfg);
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        for (size_t j = 0; j < sizes[i]; j++) {
            float x = params[offset + j];
            if (!isfinite(x)) {
                fatal("model checkpoint %s holds a non-finite value (%f) in %s at flat index %zu: "
                      "the run that wrote it diverged. Use an earlier checkpoint.",
                      path, (double)x, PARAM_NAMES[i], j);
            }
            if (i == P_QKVB && cfg->no_qkv_bias && x != 0.0f) {
                fatal("model checkpoint %s says no_qkv_bias=1 but its qkvb tensor is not all zero "
                      "(qkvb[%zu] = %g). %s", path, j, (double)x, CHECKPOINT_FIX);
            }
        }
        offset += sizes[i];
    }
    *num_parameters = P;
    return params;
}

// Atomically writes a checkpoint of cfg with the P floats of params.
static inline void checkpoint_save(const char* path, const GPT2Config* cfg, const float* params) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    size_t P = fill_param_sizes(sizes, cfg);
    for (size_t i = 0; i < P; i++) {
        if (!isfinite(params[i])) {
            fatal("internal: refusing to write %s: parameter %zu is %g (a trainer must stop at the "
                  "first non-finite value, before it saves)", path, i, (double)params[i]);
        }
    }
    int32_t header[HEADER_INTS];
    memset(header, 0, sizeof(header));
    header[0] = CHECKPOINT_MAGIC;
    header[1] = CHECKPOINT_VERSION;
    header[2] = cfg->max_seq_len;
    header[3] = cfg->vocab_size;
    header[4] = cfg->num_layers;
    header[5] = cfg->num_heads;
    header[6] = cfg->channels;
    header[7] = cfg->padded_vocab_size;
    header[8] = cfg->no_qkv_bias;
    header[9] = cfg->init_scheme;
    header[10] = cfg->untied_head;
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, header, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, params, sizeof(float), P);
    atomic_file_commit(&af);
}

#endif // LLMC_CHECKPOINT_H
