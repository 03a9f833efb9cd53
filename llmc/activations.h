/*
activations.h: the activations the trainers keep for the backward pass, and one layer's view of them.

Contract:
- ActivationTensors lists every tensor either trainer keeps, with its shape. A trainer leaves
  NULL what it does not keep: train_gpt2.c keeps the attention weights att and the projection
  outputs attproj and fcproj; train_gpt2_fp32.cu keeps each attention row's log-sum-exp att_lse
  instead (its fused kernels recompute the weights) and adds the projections' outputs inside the
  residual kernels.
- layer_activations(a, cfg, B, T, l) gives layer l's slice of each per-layer tensor (shapes
  without the leading L) for a batch of B x T, and NULL for a tensor that is NULL.
*/
#ifndef LLMC_ACTIVATIONS_H
#define LLMC_ACTIVATIONS_H

#include <stddef.h>

#include "gpt2_params.h"

typedef struct {
    float* encoded;   // (B, T, C)
    float* ln1;       // (L, B, T, C)
    float* ln1_mean;  // (L, B, T)
    float* ln1_rstd;  // (L, B, T)
    float* qkv;       // (L, B, T, 3*C)
    float* atty;      // (L, B, T, C)
    float* att;       // (L, B, NH, T, T) the attention weights (CPU)
    float* att_lse;   // (L, B, NH, T) log-sum-exp of each attention row (CUDA)
    float* attproj;   // (L, B, T, C) (CPU)
    float* residual2; // (L, B, T, C)
    float* ln2;       // (L, B, T, C)
    float* ln2_mean;  // (L, B, T)
    float* ln2_rstd;  // (L, B, T)
    float* fch;       // (L, B, T, 4*C)
    float* fch_gelu;  // (L, B, T, 4*C)
    float* fcproj;    // (L, B, T, C) (CPU)
    float* residual3; // (L, B, T, C)
    float* lnf;       // (B, T, C)
    float* lnf_mean;  // (B, T)
    float* lnf_rstd;  // (B, T)
    float* logits;    // (B, T, Vp): logits, then (CPU) probabilities, then dlogits
    float* losses;    // (B, T)
} ActivationTensors;

// Layer l's part of every per-layer tensor of ActivationTensors.
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *atty, *att, *att_lse, *attproj, *residual2;
    float *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *fcproj, *residual3;
} LayerActivations;

static inline float* activation_slice(float* t, int l, size_t per_layer) {
    return t ? t + (size_t)l * per_layer : NULL;
}

static inline LayerActivations layer_activations(const ActivationTensors* a, const GPT2Config* cfg, int B, int T,
                                                 int l) {
    size_t BT = (size_t)B * (size_t)T, BTC = BT * (size_t)cfg->channels, NH = (size_t)cfg->num_heads;
    LayerActivations v;
    v.ln1 = activation_slice(a->ln1, l, BTC);
    v.ln1_mean = activation_slice(a->ln1_mean, l, BT);
    v.ln1_rstd = activation_slice(a->ln1_rstd, l, BT);
    v.qkv = activation_slice(a->qkv, l, 3 * BTC);
    v.atty = activation_slice(a->atty, l, BTC);
    v.att = activation_slice(a->att, l, BT * NH * (size_t)T);
    v.att_lse = activation_slice(a->att_lse, l, BT * NH);
    v.attproj = activation_slice(a->attproj, l, BTC);
    v.residual2 = activation_slice(a->residual2, l, BTC);
    v.ln2 = activation_slice(a->ln2, l, BTC);
    v.ln2_mean = activation_slice(a->ln2_mean, l, BT);
    v.ln2_rstd = activation_slice(a->ln2_rstd, l, BT);
    v.fch = activation_slice(a->fch, l, 4 * BTC);
    v.fch_gelu = activation_slice(a->fch_gelu, l, 4 * BTC);
    v.fcproj = activation_slice(a->fcproj, l, BTC);
    v.residual3 = activation_slice(a->residual3, l, BTC);
    return v;
}

#endif // LLMC_ACTIVATIONS_H
