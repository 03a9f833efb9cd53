/*
sampler.h: pick the next token from logits with temperature, top-k and top-p.

Contract: sampler_pick(&s, logits, V, coin) looks only at the first V logits
(the padded columns V..Vp-1 are never sampled) and returns a token in [0, V).
  temperature == 0      greedy: the first index of the largest logit
  otherwise             p_i = softmax(logits / temperature)
  top_k > 0             keep the k most probable tokens
  top_p < 1             keep the smallest most-probable set whose mass >= top_p
then renormalize and invert the cumulative distribution at `coin` in [0, 1).
Ties in probability are ordered by token id, so the result is deterministic.
The scratch buffers are allocated once for V tokens by sampler_init.
*/
#ifndef LLMC_SAMPLER_H
#define LLMC_SAMPLER_H

#include <math.h>
#include <stdlib.h>

#include "utils.h"

typedef struct {
    float temperature; // 0 = greedy
    int top_k;         // 0 = off
    float top_p;       // 1 = off
    int V;
    float* probs;      // (V)
    int* order;        // (V)
} Sampler;

static inline void sampler_init(Sampler* s, int V, float temperature, int top_k, float top_p) {
    s->V = V;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->probs = (float*)mallocCheck((size_t)V * sizeof(float));
    s->order = (int*)mallocCheck((size_t)V * sizeof(int));
}

static inline void sampler_free(Sampler* s) {
    free(s->probs);
    free(s->order);
    s->probs = NULL;
    s->order = NULL;
}

// qsort comparator: descending probability, then ascending id. qsort has no
// context pointer, so the probabilities travel through a file-static pointer
// (sampling is single-threaded).
static const float* sampler_sort_probs_ = NULL;
static inline int sampler_cmp_(const void* a, const void* b) {
    int ia = *(const int*)a, ib = *(const int*)b;
    float pa = sampler_sort_probs_[ia], pb = sampler_sort_probs_[ib];
    if (pa > pb) { return -1; }
    if (pa < pb) { return 1; }
    return (ia > ib) - (ia < ib);
}

static inline int sampler_pick(Sampler* s, const float* logits, int V, float coin) {
    if (V > s->V) { V = s->V; }
    int best = 0;
    for (int i = 1; i < V; i++) {
        if (logits[i] > logits[best]) { best = i; }
    }
    if (s->temperature <= 0.0f) { return best; }
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        float p = expf((logits[i] - logits[best]) / s->temperature);
        s->probs[i] = p;
        sum += p;
    }
    for (int i = 0; i < V; i++) { s->probs[i] = (float)(s->probs[i] / sum); }
    int n = V;
    int filtered = (s->top_k > 0 && s->top_k < V) || s->top_p < 1.0f;
    if (!filtered) {
        double cdf = 0.0;
        for (int i = 0; i < V; i++) {
            cdf += s->probs[i];
            if (coin < cdf) { return i; }
        }
        return best; // rounding: coin beyond the total mass
    }
    for (int i = 0; i < V; i++) { s->order[i] = i; }
    sampler_sort_probs_ = s->probs;
    qsort(s->order, (size_t)V, sizeof(int), sampler_cmp_);
    sampler_sort_probs_ = NULL;
    if (s->top_k > 0 && s->top_k < n) { n = s->top_k; }
    if (s->top_p < 1.0f) {
        double mass = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            mass += s->probs[s->order[i]];
            if (mass >= s->top_p) { keep = i + 1; break; }
        }
        n = keep;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) { total += s->probs[s->order[i]]; }
    double target = (double)coin * total, cdf = 0.0;
    for (int i = 0; i < n; i++) {
        cdf += s->probs[s->order[i]];
        if (target < cdf) { return s->order[i]; }
    }
    return s->order[n - 1];
}

#endif // LLMC_SAMPLER_H
