/*
train_state.h: the training-state file, everything besides the weights that a
run needs to continue bit-identically.

Format (ours; README "Training state"): 256 int32 header, little-endian,
  [0] 20261126 magic          [1] 1 version
  [2] step (updates done)      [3] total steps of the run (--steps)
  [4,5] P (low, high 32 bits)  [6] B   [7] T
  [8,9] data epoch             [10,11] data cursor (batches taken this epoch)
  [12,13] batches per epoch    [14] number of training shards
  [15,16] seed                 [17,18] sampler RNG state
  [19,20] checksum of the model file's parameters (hash_words over the P floats)
  [21,22] elapsed training seconds (IEEE double bits)
  [23] has_init_params (0/1)
  [24] lora (0/1: the run trains LoRA adapters, llmc/lora.h; DIR/adapter_NNNNNN.bin goes with it)
  [25,26] N, the number of trained floats: P, or with lora = 1 the adapters' Q
  [27,28] with lora = 1, the checksum of the adapter file's floats (hash_words over the Q floats)
  [29..255] reserved, written 0 (a later field takes a reserved slot, with 0
  meaning "absent", so older files still read: N = 0 there means N = P)
then AdamW's first moment m (N floats), second moment v (N floats), and when
has_init_params = 1 the initial parameters (N floats; room for weight decay
toward the initialization, written with --decay-toward-init 1). Exactly 1024 + 4*N*(2 + has_init_params) bytes.
64-bit values are split into (low, high) uint32 halves.

A state file sits beside its model: DIR/state_NNNNNN.bin goes with
DIR/model_NNNNNN.bin (NNNNNN = the step in [2]); the checksum in [19,20] proves
the pair belongs together. Writes are atomic (temp file, fsync, rename).
Reading refuses a header out of its bounds (step and total steps at most
TRAIN_MAX_STEPS, B*T at most TRAIN_MAX_TOKENS_PER_STEP, P at most 2^40) and,
in the body, a non-finite m, v or initial value or a negative v.
*/
#ifndef LLMC_TRAIN_STATE_H
#define LLMC_TRAIN_STATE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gpt2_params.h"
#include "train_limits.h"
#include "utils.h"

#define TRAIN_STATE_MAGIC 20261126
#define TRAIN_STATE_VERSION 1
#define TRAIN_STATE_MAX_PARAMS ((uint64_t)1 << 40)  // far above any model (gpt2_params.h bounds P < 2^49,
                                                    // but a state of 2^40 parameters is a 12 TiB file)
#define TRAIN_STATE_FIX "Resume from a state file written by train_gpt2 (DIR/state_NNNNNN.bin)."

typedef struct {
    int step;                 // optimizer updates done
    int total_steps;          // --steps of the run (the schedule spans it)
    size_t num_parameters;    // P
    int B, T;
    uint64_t data_epoch;
    uint64_t data_cursor;     // batches already taken in data_epoch
    uint64_t data_batches_per_epoch;
    int data_num_shards;
    uint64_t seed;
    uint64_t sampler_rng;
    uint64_t model_checksum;  // hash_words of the model's P floats
    double elapsed_s;
    int has_init_params;
    int lora;                 // 1: the trained floats are LoRA adapters (adapter_NNNNNN.bin beside)
    size_t num_trained;       // N: the length of m and v (P, or the adapters' Q)
    uint64_t adapter_checksum;  // hash_words of the adapter file's Q floats (lora = 1)
} TrainState;

static inline void put_u64(int32_t* h, int slot, uint64_t v) {
    uint32_t lo = (uint32_t)(v & 0xFFFFFFFFULL), hi = (uint32_t)(v >> 32);
    memcpy(&h[slot], &lo, 4);
    memcpy(&h[slot + 1], &hi, 4);
}

static inline uint64_t get_u64(const int32_t* h, int slot) {
    uint32_t lo, hi;
    memcpy(&lo, &h[slot], 4);
    memcpy(&hi, &h[slot + 1], 4);
    return ((uint64_t)hi << 32) | (uint64_t)lo;
}

// Atomically writes the state; init may be NULL when !st->has_init_params.
static inline void train_state_save(const char* path, const TrainState* st, const float* m,
                                    const float* v, const float* init) {
    int32_t h[HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = TRAIN_STATE_MAGIC;
    h[1] = TRAIN_STATE_VERSION;
    h[2] = st->step;
    h[3] = st->total_steps;
    put_u64(h, 4, (uint64_t)st->num_parameters);
    h[6] = st->B;
    h[7] = st->T;
    put_u64(h, 8, st->data_epoch);
    put_u64(h, 10, st->data_cursor);
    put_u64(h, 12, st->data_batches_per_epoch);
    h[14] = st->data_num_shards;
    put_u64(h, 15, st->seed);
    put_u64(h, 17, st->sampler_rng);
    put_u64(h, 19, st->model_checksum);
    uint64_t bits;
    memcpy(&bits, &st->elapsed_s, 8);
    put_u64(h, 21, bits);
    h[23] = st->has_init_params ? 1 : 0;
    h[24] = st->lora ? 1 : 0;
    put_u64(h, 25, (uint64_t)st->num_trained);
    put_u64(h, 27, st->lora ? st->adapter_checksum : 0);
    if (st->num_trained == 0) { fatal("internal: train_state_save with no trained floats"); }
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, h, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, m, sizeof(float), st->num_trained);
    atomic_file_write(&af, v, sizeof(float), st->num_trained);
    if (st->has_init_params) {
        if (init == NULL) { fatal("internal: train_state_save with has_init_params but no initial parameters"); }
        atomic_file_write(&af, init, sizeof(float), st->num_trained);
    }
    atomic_file_commit(&af);
}

// Reads and validates the header (magic, version, exact size) into st.
static inline void train_state_read_header(const char* path, TrainState* st) {
    int32_t h[HEADER_INTS];
    long long size = read_header_checked(path, "training state", TRAIN_STATE_MAGIC,
                                         TRAIN_STATE_VERSION, h, TRAIN_STATE_FIX);
    memset(st, 0, sizeof(*st));
    st->step = h[2];
    st->total_steps = h[3];
    st->num_parameters = (size_t)get_u64(h, 4);
    st->B = h[6];
    st->T = h[7];
    st->data_epoch = get_u64(h, 8);
    st->data_cursor = get_u64(h, 10);
    st->data_batches_per_epoch = get_u64(h, 12);
    st->data_num_shards = h[14];
    st->seed = get_u64(h, 15);
    st->sampler_rng = get_u64(h, 17);
    st->model_checksum = get_u64(h, 19);
    uint64_t bits = get_u64(h, 21);
    memcpy(&st->elapsed_s, &bits, 8);
    st->has_init_params = h[23];
    st->lora = h[24];
    st->num_trained = (size_t)get_u64(h, 25);
    st->adapter_checksum = get_u64(h, 27);
    if (st->num_trained == 0 && st->lora == 0) { st->num_trained = st->num_parameters; }  // a file from before [25]
    if (st->step < 0 || st->step > TRAIN_MAX_STEPS || st->total_steps < 1 || st->total_steps > TRAIN_MAX_STEPS ||
        st->B < 1 || st->T < 1 || st->T > GPT2_MAX_SEQ_LEN || (long long)st->B * st->T > TRAIN_MAX_TOKENS_PER_STEP ||
        st->num_parameters == 0 || (uint64_t)st->num_parameters > TRAIN_STATE_MAX_PARAMS ||
        st->data_num_shards < 0 || (st->has_init_params != 0 && st->has_init_params != 1) ||
        (st->lora != 0 && st->lora != 1) || st->num_trained == 0 || (uint64_t)st->num_trained > TRAIN_STATE_MAX_PARAMS ||
        (st->lora == 0 && st->num_trained != st->num_parameters) || (st->lora && st->has_init_params)) {
        fatal("training state %s has an invalid header: step=%d total_steps=%d (both at most %d) B=%d T=%d "
              "(B*T at most %d) P=%zu shards=%d has_init_params=%d lora=%d N=%zu (P without lora, 1 to 2^40 with it). %s",
              path, st->step, st->total_steps, TRAIN_MAX_STEPS, st->B, st->T, TRAIN_MAX_TOKENS_PER_STEP,
              st->num_parameters, st->data_num_shards, st->has_init_params, st->lora, st->num_trained,
              TRAIN_STATE_FIX);
    }
    char what[160];
    snprintf(what, sizeof(what), "1024-byte header + 4 * N * %d with N=%zu",
             2 + st->has_init_params, st->num_trained);
    check_file_size(path, "training state", size,
                    (long long)(HEADER_BYTES + 4 * st->num_trained * (size_t)(2 + st->has_init_params)),
                    what, TRAIN_STATE_FIX);
}

// The first value of x[0..n-1] that is not finite, or (nonneg) negative; n when there is none.
static inline size_t train_state_first_bad(const float* x, size_t n, int nonneg) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || (nonneg && x[i] < 0.0f)) { return i; }
    }
    return n;
}

// Reads the body (after train_state_read_header): m, v, and init when
// st->has_init_params (init may be NULL to skip it).
static inline void train_state_load_body(const char* path, const TrainState* st, float* m, float* v,
                                         float* init) {
    size_t P = st->num_trained;
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    freadCheck(m, sizeof(float), P, fp);
    freadCheck(v, sizeof(float), P, fp);
    if (st->has_init_params && init != NULL) { freadCheck(init, sizeof(float), P, fp); }
    fcloseCheck(fp);
    // m is a running mean of gradients, v of squared gradients: finite, and v >= 0. Anything
    // else can only come from a damaged file, and would train a NaN model.
    const char* names[3] = {"AdamW first moment m", "AdamW second moment v", "initial parameters"};
    const float* arrays[3] = {m, v, st->has_init_params ? init : NULL};
    for (int a = 0; a < 3; a++) {
        if (arrays[a] == NULL) { continue; }
        size_t i = train_state_first_bad(arrays[a], P, a == 1);
        if (i < P) {
            fatal("training state %s holds an invalid %s: element %zu is %g (expected a finite value%s). "
                  "The file is damaged: resume from another state file.", path, names[a], i,
                  (double)arrays[a][i], a == 1 ? " >= 0" : "");
        }
    }
}

#endif // LLMC_TRAIN_STATE_H
