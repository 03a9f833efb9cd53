/*
adamw.h: AdamW's settings and the per-step and per-tensor scalars both trainers' updates use.

Contract:
- AdamWSettings: beta1, beta2, eps, weight_decay, and which tensors decay (all, or the
  matrices only: --decay-params) and toward what (zero, or the initial values).
- adamw_step_scalars(s, lr, t) for step t (1-based): step_size = lr / (1 - beta1^t) and
  bias2_sqrt = sqrt(1 - beta2^t), computed in double and rounded once to float, so that each
  element's update is p - step_size * m / (sqrt(v) / bias2_sqrt + eps) (torch.optim.AdamW's
  order of operations).
- adamw_tensor_decay(s, cfg, i, lr, &decay, &lr_wd) for tensor i: 0 when the tensor is not
  updated (qkvb of a model without the QKV bias), else 1 with decay = 1 - lr*wd and
  lr_wd = lr*wd, where wd is the tensor's weight decay (0 for the vectors under "matrices").
- adamw_adapter_decay(s, lr, &decay, &lr_wd): the same for LoRA adapters (matrices: they always decay).
*/
#ifndef LLMC_ADAMW_H
#define LLMC_ADAMW_H

#include <math.h>

#include "gpt2_params.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
    int decay_matrices_only;  // --decay-params matrices
    int decay_toward_init;    // --decay-toward-init: decay pulls toward the initial parameters
} AdamWSettings;

typedef struct {
    float step_size;   // lr / (1 - beta1^t)
    float bias2_sqrt;  // sqrt(1 - beta2^t)
} AdamWScalars;

static inline AdamWScalars adamw_step_scalars(const AdamWSettings* s, float lr, int t) {
    AdamWScalars a;
    a.step_size = (float)((double)lr / (1.0 - pow((double)s->beta1, (double)t)));
    a.bias2_sqrt = (float)sqrt(1.0 - pow((double)s->beta2, (double)t));
    return a;
}

static inline int adamw_tensor_decay(const AdamWSettings* s, const GPT2Config* cfg, int i, float lr, float* decay,
                                     float* lr_wd) {
    if (i == P_QKVB && cfg->no_qkv_bias) { return 0; }
    float wd = (s->decay_matrices_only && !param_is_matrix(i)) ? 0.0f : s->weight_decay;
    *decay = 1.0f - lr * wd;
    *lr_wd = lr * wd;
    return 1;
}

// LoRA adapters (llmc/lora.h) are matrices: they decay under "all" and "matrices" alike, toward zero.
static inline void adamw_adapter_decay(const AdamWSettings* s, float lr, float* decay, float* lr_wd) {
    *decay = 1.0f - lr * s->weight_decay;
    *lr_wd = lr * s->weight_decay;
}

#endif // LLMC_ADAMW_H
