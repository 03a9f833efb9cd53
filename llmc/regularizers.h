/*
regularizers.h: the random numbers of the research regularizers, shared by
train_gpt2.c, train_gpt2_fp32.cu (host and device code) and, line for line,
dev/regularizers.py, so the PyTorch reference reproduces every dropout mask and
every weight-noise draw of both trainers.

Contract:
- Everything is a pure function of (seed, step, ...) and an element index:
  counter-based, no state. A resumed run, a run on the other trainer, and the
  Python reference all draw the same numbers for the same step.
- counter_u64(key, i) is the i-th output (0-based) of splitmix64 started at
  `key`: mix64(key + (i + 1) * GOLDEN). Keys are derived with mix64 from the
  run's --seed, a tag per use, the step, and for dropout the layer and site.
- Dropout with rate p: element i of a site is kept when
  (counter_u64(key, i) >> 40) >= dropout_threshold(p) = floor(p * 2^24) (p as
  float32, the product in double), and kept values are scaled by
  1.0f / (1.0f - p) (float32). P(keep) = 1 - threshold / 2^24.
  Sites: 0 embed (after wte + wpe, (B, T, C), layer -1), 1 attn (the softmaxed
  attention weights, (B, NH, T, T), index ((b*NH + h)*T + t)*T + t2), 2
  attn_proj (attention output projection with its bias, before the residual
  add, (B, T, C)), 3 mlp (MLP output with its bias, before the residual add,
  (B, T, C)). Element index = row-major position in that shape.
- Weight noise with standard deviation sigma: parameter j (flat index into the
  16 tensors in checkpoint order) gets sigma * z_j, z_j standard normal by
  Box-Muller in double: u1 = ((counter_u64(key, 2j) >> 11) + 1) * 2^-53 in
  (0, 1], u2 = (counter_u64(key, 2j+1) >> 11) * 2^-53 in [0, 1),
  z = sqrt(-2 ln u1) cos(2 pi u2); noise_j = (float)(sigma * z). Skipped: the
  padded rows V..Vp-1 of wte and qkvb when the model has no QKV bias (they
  stay zero). weight_noise_span() says which elements of a tensor get noise.
*/
#ifndef LLMC_REGULARIZERS_H
#define LLMC_REGULARIZERS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "gpt2_params.h"
#include "train_config.h"
#include "train_state.h"
#include "utils.h"

#ifdef __CUDACC__
#define LLMC_HOST_DEVICE __host__ __device__
#else
#define LLMC_HOST_DEVICE
#endif

#define REG_GOLDEN 0x9E3779B97F4A7C15ULL
#define DROPOUT_TAG 0x64726F706F7574ULL   // "dropout"
#define NOISE_TAG 0x6E6F697365ULL         // "noise"

enum { DROPOUT_SITE_EMBED = 0, DROPOUT_SITE_ATTN = 1, DROPOUT_SITE_ATTN_PROJ = 2, DROPOUT_SITE_MLP = 3 };

// splitmix64's output function (Steele, Lea, Flood 2014): a bijection on uint64.
LLMC_HOST_DEVICE static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

LLMC_HOST_DEVICE static inline uint64_t counter_u64(uint64_t key, uint64_t i) {
    return mix64(key + (i + 1) * REG_GOLDEN);
}

// The key of one dropout site of one training step (layer -1 for the embedding).
static inline uint64_t dropout_key(uint64_t seed, int step, int layer, int site) {
    uint64_t k = mix64(seed ^ DROPOUT_TAG);
    k = mix64(k ^ (uint64_t)(uint32_t)step);
    return mix64(k ^ (((uint64_t)(uint32_t)(layer + 1) << 8) | (uint64_t)(uint32_t)site));
}

static inline uint64_t noise_key(uint64_t seed, int step) {
    return mix64(mix64(seed ^ NOISE_TAG) ^ (uint64_t)(uint32_t)step);
}

static inline uint32_t dropout_threshold(float p) {
    return (uint32_t)floor((double)p * 16777216.0);
}

// The factor element i of a dropout site is multiplied by: 0 (dropped) or scale.
LLMC_HOST_DEVICE static inline float dropout_factor(uint64_t key, uint64_t i, uint32_t threshold, float scale) {
    return (uint32_t)(counter_u64(key, i) >> 40) >= threshold ? scale : 0.0f;
}

LLMC_HOST_DEVICE static inline float weight_noise_at(uint64_t key, uint64_t j, float sigma) {
    double u1 = ((double)(counter_u64(key, 2 * j) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(counter_u64(key, 2 * j + 1) >> 11) * (1.0 / 9007199254740992.0);
    double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    return (float)((double)sigma * z);
}

// Elements [0, n) of tensor i that get weight noise (the rest stay as they are):
// wte's (and an untied lm_head's) first V rows, none of qkvb without a QKV bias, all of every
// other tensor.
static inline size_t weight_noise_span(const GPT2Config* cfg, int i, size_t tensor_size) {
    if (i == P_WTE || (i == P_LMHEAD && tensor_size > 0)) { return (size_t)cfg->vocab_size * (size_t)cfg->channels; }
    if (i == P_QKVB && cfg->no_qkv_bias) { return 0; }
    return tensor_size;
}

// A dropout rate and its derived constants.
typedef struct {
    float p;             // 0 = off
    float scale;         // 1 / (1 - p)
    uint32_t threshold;  // dropout_threshold(p)
} DropoutConfig;

static inline DropoutConfig dropout_config(float p) {
    DropoutConfig d;
    d.p = p;
    d.scale = 1.0f / (1.0f - p);
    d.threshold = dropout_threshold(p);
    return d;
}

// The dropout of one forward/backward pass: d for a training step (step > 0) with p > 0,
// NULL otherwise (evaluation and sampling run with step 0).
static inline const DropoutConfig* dropout_for_step(const DropoutConfig* d, int step) {
    return step > 0 && d->p > 0.0f ? d : NULL;
}

// What a model carries for the regularizers: the run's --seed (every mask and noise draw derives
// from it), --dropout, and the training step the current forward/backward belongs to (0 during
// evaluation and sampling: no dropout).
typedef struct {
    uint64_t seed;
    DropoutConfig dropout;
    int step;
} RegularizerState;

// The dropout of the current pass (dropout_for_step), and the key of one of its sites.
static inline const DropoutConfig* regularizer_dropout(const RegularizerState* r) {
    return dropout_for_step(&r->dropout, r->step);
}

static inline uint64_t regularizer_site_key(const RegularizerState* r, int layer, int site) {
    return dropout_key(r->seed, r->step, layer, site);
}

// ---- host-side helpers of the trainers' main()

#define REGULARIZER_DESC_LEN 160

static inline const char* describe_dropout(char* buf, size_t n, float p) {
    if (p > 0.0f) {
        snprintf(buf, n, "%g at embed, attn weights, attn proj, mlp (training only)", (double)p);
    } else {
        snprintf(buf, n, "off");
    }
    return buf;
}

static inline const char* describe_weight_noise(char* buf, size_t n, float sigma) {
    if (sigma > 0.0f) {
        snprintf(buf, n, "sigma %g, fresh each step, update applied to the clean weights", (double)sigma);
    } else {
        snprintf(buf, n, "off");
    }
    return buf;
}

// A resumed run must decay toward the same point: --decay-toward-init 1 needs
// the initial parameters, which only a state written with it holds.
static inline void check_resume_regularizers(const TrainState* st, const TrainConfig* cfg) {
    if (cfg->decay_toward_init && !st->has_init_params) {
        fatal("--decay-toward-init 1, but training state %s holds no initial parameters (its run decayed "
              "toward zero): resume with --decay-toward-init 0, or start a new run", cfg->resume);
    }
    if (!cfg->decay_toward_init && st->has_init_params) {
        warn("training state %s was written with --decay-toward-init 1; this run decays toward zero "
             "(pass --decay-toward-init 1 to continue toward the initial values)", cfg->resume);
    }
}

static inline void warn_ineffective_regularizers(const TrainConfig* cfg) {
    if (cfg->decay_toward_init && cfg->weight_decay == 0.0f) {
        warn("--decay-toward-init 1 has no effect with --weight-decay 0");
    }
}

#endif // LLMC_REGULARIZERS_H
