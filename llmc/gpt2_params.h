/*
gpt2_params.h: the GPT-2 configuration and its parameter tensors: llm.c's 16, and a 17th,
lm_head (Vp, C), in models with an untied head (header[10] = 1; its size is 0 otherwise, so
a tied model's block is llm.c's 16 tensors byte for byte).

Contract: the names, order and shapes below are the checkpoint layout of the
README ("File formats") and equal dev/checkpoint.py's PARAM_NAMES and
param_shapes (a test holds them equal). All 16 tensors live in one contiguous
float block, in this order; point_parameters() sets the 16 pointers into it.
Vp is V rounded up to a multiple of 128; rows V..Vp-1 of wte are zero.
no_qkv_bias = 1 (header[8] of the checkpoint) means qkvb is all zero and is
never trained.
Shape vocabulary: L layers, C channels, NH heads, HS = C/NH, V vocab, Vp padded
vocab, maxT the model's context.
*/
#ifndef LLMC_GPT2_PARAMS_H
#define LLMC_GPT2_PARAMS_H

#include <stddef.h>

#define NUM_PARAMETER_TENSORS 17  // llm.c's 16 and lm_head (empty in a tied model)
#define VOCAB_PAD_MULTIPLE 128

// Bounds on every dimension a model file may hold (dev/checkpoint.py ModelConfig holds the
// same). They are far above any model these trainers can train, and they keep every size
// derived from them (P, activations) far from 64-bit overflow: P < 2^49.
#define GPT2_MAX_SEQ_LEN (1 << 20)  // maxT
#define GPT2_MAX_VOCAB 65536        // V: token shards store uint16 ids
#define GPT2_MAX_LAYERS 4096        // L
#define GPT2_MAX_CHANNELS 65536     // C (and NH <= C)

typedef struct {
    int max_seq_len;        // maxT: rows of wpe
    int vocab_size;         // V: real tokens (the loss and sampling use only these)
    int padded_vocab_size;  // Vp: V rounded up to a multiple of 128
    int num_layers;         // L
    int num_heads;          // NH
    int channels;           // C
    int no_qkv_bias;        // 1: qkvb is held at zero and never updated
    int init_scheme;        // provenance, header[9]: INIT_NOT_RECORDED, INIT_GPT2 or INIT_PYTORCH
    int untied_head;        // header[10] = 1: the classifier uses lm_head (tensor 17), not wte
} GPT2Config;

static const char* const PARAM_NAMES[NUM_PARAMETER_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb", "lm_head",
};

enum {
    P_WTE = 0, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB, P_LMHEAD
};

typedef struct {
    float* wte;      // (Vp, C)
    float* wpe;      // (maxT, C)
    float* ln1w;     // (L, C)
    float* ln1b;     // (L, C)
    float* qkvw;     // (L, 3*C, C)
    float* qkvb;     // (L, 3*C)
    float* attprojw; // (L, C, C)
    float* attprojb; // (L, C)
    float* ln2w;     // (L, C)
    float* ln2b;     // (L, C)
    float* fcw;      // (L, 4*C, C)
    float* fcb;      // (L, 4*C)
    float* fcprojw;  // (L, C, 4*C)
    float* fcprojb;  // (L, C)
    float* lnfw;     // (C)
    float* lnfb;     // (C)
    float* lm_head;  // (Vp, C) with an untied head, else empty (use classifier_weight())
} ParameterTensors;

// The classifier's weight: lm_head with an untied head, else wte (tied, as in GPT-2).
static inline float* classifier_weight(const ParameterTensors* p, int untied_head) {
    return untied_head ? p->lm_head : p->wte;
}

static inline int round_up_vocab(int V) {
    return ((V + VOCAB_PAD_MULTIPLE - 1) / VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE;
}

// Shapes of the tensors: ndims[i] in 1..3, dims[i][0..ndims-1] (dims[P_LMHEAD][0] = 0 when tied).
static inline void fill_param_shapes(int ndims[NUM_PARAMETER_TENSORS],
                                     size_t dims[NUM_PARAMETER_TENSORS][3],
                                     const GPT2Config* cfg) {
    size_t Vp = (size_t)cfg->padded_vocab_size, C = (size_t)cfg->channels;
    size_t L = (size_t)cfg->num_layers, maxT = (size_t)cfg->max_seq_len;
    size_t shapes[NUM_PARAMETER_TENSORS][3] = {
        {Vp, C, 0}, {maxT, C, 0}, {L, C, 0}, {L, C, 0},
        {L, 3 * C, C}, {L, 3 * C, 0}, {L, C, C}, {L, C, 0},
        {L, C, 0}, {L, C, 0}, {L, 4 * C, C}, {L, 4 * C, 0},
        {L, C, 4 * C}, {L, C, 0}, {C, 0, 0}, {C, 0, 0},
        {cfg->untied_head ? Vp : 0, C, 0},
    };
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        ndims[i] = 0;
        for (int d = 0; d < 3; d++) {
            dims[i][d] = shapes[i][d];
            if (shapes[i][d] != 0) { ndims[i] = d + 1; }
        }
    }
}

// Number of floats in each tensor; returns the total P.
static inline size_t fill_param_sizes(size_t sizes[NUM_PARAMETER_TENSORS], const GPT2Config* cfg) {
    int ndims[NUM_PARAMETER_TENSORS];
    size_t dims[NUM_PARAMETER_TENSORS][3];
    fill_param_shapes(ndims, dims, cfg);
    size_t total = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = ndims[i] > 0 && dims[i][0] == 0 ? 0 : 1;  // an empty lm_head
        for (int d = 0; d < ndims[i]; d++) { n *= dims[i][d]; }
        sizes[i] = n;
        total += n;
    }
    return total;
}

// Sets the 16 pointers of `params` into the contiguous block `memory`.
static inline void point_parameters(ParameterTensors* params, float* memory,
                                    const size_t sizes[NUM_PARAMETER_TENSORS]) {
    float** ptrs[NUM_PARAMETER_TENSORS] = {
        &params->wte, &params->wpe, &params->ln1w, &params->ln1b, &params->qkvw, &params->qkvb,
        &params->attprojw, &params->attprojb, &params->ln2w, &params->ln2b, &params->fcw,
        &params->fcb, &params->fcprojw, &params->fcprojb, &params->lnfw, &params->lnfb, &params->lm_head,
    };
    float* p = memory;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        *(ptrs[i]) = p;
        p += sizes[i];
    }
}

// The weight matrices (wte, wpe, qkvw, attprojw, fcw, fcprojw): the tensors
// `--decay-params matrices` applies weight decay to. Biases and LayerNorm
// parameters are the rest.
static inline int param_is_matrix(int i) {
    return i == P_WTE || i == P_WPE || i == P_QKVW || i == P_ATTPROJW || i == P_FCW || i == P_FCPROJW ||
           i == P_LMHEAD;
}

#endif // LLMC_GPT2_PARAMS_H
