/*
lora.h: low-rank adapters (LoRA) on the block matrices, and the adapter file; shared by both
trainers and mirrored by dev/lora.py.

A targeted matrix W (out, in) of layer l is used as W + s B A with A (r, in), B (out, r) and
s = alpha / r; W stays frozen (no gradient, no AdamW moments), A and B train. The forward adds
s (x A^T) B^T to x W^T + b, as PEFT's LoraLayer does (result + lora_B(lora_A(x)) * scaling).
Targets (--lora-targets), with their transformers/PEFT module names:
  qkvw      attn.c_attn     in C,  out 3C
  attprojw  attn.c_proj     in C,  out C
  fcw       mlp.c_fc        in C,  out 4C
  fcprojw   mlp.c_proj      in 4C, out C
New adapters start as PEFT's default: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with
a = sqrt(5)), B = 0, so step 0 computes exactly the base model.

The adapter block (Q floats, one contiguous array, as the parameters are): for each target in
the order above that the mask holds, A (L, r, in) then B (L, out, r).

Adapter file (ours; README "File formats"): 256 int32 header, little-endian,
  [0] 20261127 magic   [1] 1 version   [2] rank r   [3] alpha (IEEE float32 bits)
  [4] target mask (bit k = target k above: 1 qkvw, 2 attprojw, 4 fcw, 8 fcprojw)
  [5] L   [6] C   [7,8] checksum of the base model's parameters (hash_words of its P floats,
  as the training state's [19,20])   [9..255] 0
then the Q floats of the block. Exactly 1024 + 4 Q bytes. Reading checks the header (rank 1..
LORA_MAX_RANK and at most min(in, out), alpha finite and > 0, a non-empty mask of known bits),
L and C against the model, the checksum against the model's parameters (an adapter belongs to
one base model), the exact size and that every value is finite; every failure is fatal() naming
the file. Writes are atomic.
*/
#ifndef LLMC_LORA_H
#define LLMC_LORA_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gpt2_params.h"
#include "rand.h"
#include "utils.h"

#define LORA_MAGIC 20261127
#define LORA_VERSION 1
#define LORA_NUM_TARGETS 4
#define LORA_MAX_RANK 4096
#define LORA_FIX "Write it with a trainer run with --lora-rank (or check the path)."

enum { LORA_QKVW = 0, LORA_ATTPROJW, LORA_FCW, LORA_FCPROJW };
static const char* const LORA_TARGET_NAMES[LORA_NUM_TARGETS] = {"qkvw", "attprojw", "fcw", "fcprojw"};

typedef struct {
    int rank;         // r (0: no adapters)
    float alpha;      // the scale is alpha / r
    int target_mask;  // bit k: target k of LORA_TARGET_NAMES
    int L, C;
    size_t sizes[2 * LORA_NUM_TARGETS];  // A_k then B_k, 0 for a target not in the mask
    size_t total;                        // Q
} LoraConfig;

typedef struct {
    float* A[LORA_NUM_TARGETS];  // (L, r, in) or NULL
    float* B[LORA_NUM_TARGETS];  // (L, out, r) or NULL
} LoraTensors;

static inline float lora_scale(const LoraConfig* lc) { return lc->alpha / (float)lc->rank; }

static inline int lora_targets(const LoraConfig* lc, int k) { return lc->rank > 0 && ((lc->target_mask >> k) & 1); }

// in and out of target k's matrix for channels C
static inline void lora_target_dims(int k, int C, int* in, int* out) {
    *in = k == LORA_FCPROJW ? 4 * C : C;
    *out = k == LORA_QKVW ? 3 * C : k == LORA_FCW ? 4 * C : C;
}

static inline void lora_setup(LoraConfig* lc, int rank, float alpha, int mask, int L, int C) {
    memset(lc, 0, sizeof(*lc));
    lc->rank = rank;
    lc->alpha = alpha;
    lc->target_mask = mask;
    lc->L = L;
    lc->C = C;
    for (int k = 0; k < LORA_NUM_TARGETS; k++) {
        if (!lora_targets(lc, k)) { continue; }
        int in, out;
        lora_target_dims(k, C, &in, &out);
        lc->sizes[2 * k] = (size_t)L * rank * in;
        lc->sizes[2 * k + 1] = (size_t)L * out * rank;
        lc->total += lc->sizes[2 * k] + lc->sizes[2 * k + 1];
    }
}

static inline void lora_point(LoraTensors* t, float* mem, const LoraConfig* lc) {
    float* p = mem;
    for (int k = 0; k < LORA_NUM_TARGETS; k++) {
        t->A[k] = lc->sizes[2 * k] ? p : NULL;
        p += lc->sizes[2 * k];
        t->B[k] = lc->sizes[2 * k + 1] ? p : NULL;
        p += lc->sizes[2 * k + 1];
    }
}

// "qkvw,fcw" -> mask; fatal on an unknown or repeated name or an empty list
static inline int lora_parse_targets(const char* spec) {
    int mask = 0;
    const char* s = spec;
    while (*s) {
        const char* end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        int found = -1;
        for (int k = 0; k < LORA_NUM_TARGETS; k++) {
            if (strlen(LORA_TARGET_NAMES[k]) == len && strncmp(s, LORA_TARGET_NAMES[k], len) == 0) { found = k; }
        }
        if (found < 0) {
            fatal("--lora-targets \"%s\": \"%.*s\" is not a target; choose from qkvw, attprojw, fcw, fcprojw "
                  "(comma-separated)", spec, (int)len, s);
        }
        if (mask & (1 << found)) { fatal("--lora-targets \"%s\" names %s twice", spec, LORA_TARGET_NAMES[found]); }
        mask |= 1 << found;
        s = end ? end + 1 : s + len;
    }
    if (mask == 0) { fatal("--lora-targets is empty; give one or more of qkvw, attprojw, fcw, fcprojw"); }
    return mask;
}

// "qkvw,fcw" from a mask (buf of at least 40 chars)
static inline const char* lora_describe_targets(char* buf, size_t n, int mask) {
    buf[0] = '\0';
    for (int k = 0; k < LORA_NUM_TARGETS; k++) {
        if (!((mask >> k) & 1)) { continue; }
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", len ? "," : "", LORA_TARGET_NAMES[k]);
    }
    return buf;
}

// New adapters (PEFT's default): every A ~ U(-1/sqrt(in), 1/sqrt(in)) from the run's seed, B = 0.
static inline void lora_init(float* mem, const LoraConfig* lc, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, mix_seed(seed, 0x6C6F7261ULL));  // "lora"
    LoraTensors t;
    lora_point(&t, mem, lc);
    for (int k = 0; k < LORA_NUM_TARGETS; k++) {
        if (!t.A[k]) { continue; }
        int in, out;
        lora_target_dims(k, lc->C, &in, &out);
        float bound = 1.0f / sqrtf((float)in);
        for (size_t j = 0; j < lc->sizes[2 * k]; j++) { t.A[k][j] = (2.0f * rng_float(&rng) - 1.0f) * bound; }
        memset(t.B[k], 0, lc->sizes[2 * k + 1] * sizeof(float));
    }
}

// Checks rank, alpha and mask for a model of L layers and C channels; `what` names their source.
static inline void lora_check_settings(int rank, float alpha, int mask, int C, const char* what) {
    int min_dim = C;  // the smallest in or out of any target is C
    if (rank < 1 || rank > LORA_MAX_RANK || rank > min_dim) {
        fatal("%s: LoRA rank %d is out of range: it must be 1..%d and at most the model's C=%d", what, rank,
              LORA_MAX_RANK, C);
    }
    if (!isfinite(alpha) || alpha <= 0.0f) {
        fatal("%s: LoRA alpha %g must be finite and > 0 (the scale is alpha / rank)", what, (double)alpha);
    }
    if (mask <= 0 || mask >= (1 << LORA_NUM_TARGETS)) {
        fatal("%s: LoRA target mask %d is not a non-empty set of the 4 targets (1 qkvw, 2 attprojw, 4 fcw, "
              "8 fcprojw)", what, mask);
    }
}

static inline void lora_save(const char* path, const LoraConfig* lc, uint64_t base_checksum, const float* mem) {
    int32_t h[HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = LORA_MAGIC;
    h[1] = LORA_VERSION;
    h[2] = lc->rank;
    memcpy(&h[3], &lc->alpha, 4);
    h[4] = lc->target_mask;
    h[5] = lc->L;
    h[6] = lc->C;
    uint32_t lo = (uint32_t)(base_checksum & 0xFFFFFFFFULL), hi = (uint32_t)(base_checksum >> 32);
    memcpy(&h[7], &lo, 4);
    memcpy(&h[8], &hi, 4);
    for (size_t j = 0; j < lc->total; j++) {
        if (!isfinite(mem[j])) { fatal("internal: lora_save of %s with a non-finite value at %zu", path, j); }
    }
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, h, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, mem, sizeof(float), lc->total);
    atomic_file_commit(&af);
}

// Reads the adapter file at path for a model of L layers, C channels and parameter checksum
// base_checksum (base_path names it in messages): fills lc and returns a malloc'd block of Q floats.
static inline float* lora_load(const char* path, LoraConfig* lc, int L, int C, uint64_t base_checksum,
                               const char* base_path) {
    int32_t h[HEADER_INTS];
    long long size = read_header_checked(path, "LoRA adapter", LORA_MAGIC, LORA_VERSION, h, LORA_FIX);
    float alpha;
    memcpy(&alpha, &h[3], 4);
    char what[1100];
    snprintf(what, sizeof(what), "LoRA adapter %s", path);
    lora_check_settings(h[2], alpha, h[4], C, what);
    if (h[5] != L || h[6] != C) {
        fatal("LoRA adapter %s is for a model with L=%d C=%d, but the model %s has L=%d C=%d: load it onto the "
              "base model it was trained on", path, h[5], h[6], base_path, L, C);
    }
    uint32_t lo, hi;
    memcpy(&lo, &h[7], 4);
    memcpy(&hi, &h[8], 4);
    uint64_t checksum = ((uint64_t)hi << 32) | lo;
    if (checksum != base_checksum) {
        fatal("LoRA adapter %s was trained on another base model than %s (the base model's checksum differs): "
              "load it onto the model it was trained on, or merge it with python -m dev.lora merge", path,
              base_path);
    }
    for (int i = 9; i < HEADER_INTS; i++) {
        if (h[i] != 0) { fatal("LoRA adapter %s has a non-zero reserved header slot [%d] = %d. %s", path, i, h[i], LORA_FIX); }
    }
    lora_setup(lc, h[2], alpha, h[4], L, C);
    char expect[200];
    snprintf(expect, sizeof(expect), "1024-byte header + 4 * %zu adapter floats for rank %d", lc->total, lc->rank);
    check_file_size(path, "LoRA adapter", size, (long long)(HEADER_BYTES + 4 * lc->total), expect, LORA_FIX);
    float* mem = (float*)mallocCheck(lc->total * sizeof(float));
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    freadCheck(mem, sizeof(float), lc->total, fp);
    fcloseCheck(fp);
    for (size_t j = 0; j < lc->total; j++) {
        if (!isfinite(mem[j])) {
            fatal("LoRA adapter %s holds a non-finite value (%g) at flat index %zu: the run that wrote it "
                  "diverged; use an earlier adapter file", path, (double)mem[j], j);
        }
    }
    return mem;
}

#endif  // LLMC_LORA_H
