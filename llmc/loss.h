/*
loss.h: the bookkeeping around the cross-entropy that both trainers share.

Contract:
- loss_weights(dloss, mask, N) writes the weight of each of the N positions in the mean
  loss: 1/scored for the positions that count (mask[n] != 0, or every position when mask is
  NULL), 0 for the others (and for all when none counts); returns scored. The backward pass
  multiplies each position's gradient by its weight.
- loss_summary(losses, argmax, targets, mask, B, T, scored) sums the counted positions' losses
  in order (double) into loss_sum and their mean into mean_loss (0 when none counts); with a
  mask (example data) it also counts the examples (rows with at least one scored position) and
  those whose every scored target is the argmax prediction (argmax is read only then).
- classifier_chunk_rows(requested, Vp, max_floats): the positions per chunk of the fused
  classifier. Both trainers compute the logits, the softmax, the loss and the classifier's
  gradients chunk by chunk (no (B, T, Vp) buffer exists): `requested` rows when > 0
  (--classifier-rows), else as many as fit in max_floats logits, a multiple of 128 (16 when
  fewer than 128 fit), at least 16. A function of the flag and Vp alone, never of the thread
  count, so the chunk boundaries (which decide the order of the wte gradient's sums) are fixed.
*/
#ifndef LLMC_LOSS_H
#define LLMC_LOSS_H

#include <stddef.h>

typedef struct {
    double loss_sum;    // sum of the counted positions' losses
    size_t num_scored;  // how many positions count
    float mean_loss;    // loss_sum / num_scored (0 when none counts)
    int num_correct;    // example data: examples whose every scored target is the argmax
    int num_examples;   // example data: rows with at least one scored position
} LossSummary;

static inline int classifier_chunk_rows(int requested, int Vp, size_t max_floats) {
    if (requested > 0) { return requested; }
    size_t rows = max_floats / (size_t)Vp;
    rows = rows >= 128 ? rows / 128 * 128 : rows / 16 * 16;
    if (rows < 16) { rows = 16; }
    return rows > (1u << 30) ? (1 << 30) : (int)rows;
}

static inline size_t loss_weights(float* dloss, const int* mask, int N) {
    size_t scored = 0;
    for (int n = 0; n < N; n++) { scored += mask ? (size_t)(mask[n] != 0) : 1; }
    for (int n = 0; n < N; n++) {
        int counts = mask ? mask[n] != 0 : 1;
        dloss[n] = counts && scored > 0 ? 1.0f / (float)scored : 0.0f;
    }
    return scored;
}

static inline LossSummary loss_summary(const float* losses, const int* argmax, const int* targets, const int* mask,
                                       int B, int T, size_t scored) {
    LossSummary s;
    s.loss_sum = 0.0;
    for (int n = 0; n < B * T; n++) {
        if (mask ? mask[n] != 0 : 1) { s.loss_sum += losses[n]; }
    }
    s.num_scored = scored;
    s.mean_loss = scored > 0 ? (float)(s.loss_sum / (double)scored) : 0.0f;
    s.num_correct = 0;
    s.num_examples = 0;
    if (mask) {
        for (int b = 0; b < B; b++) {
            int any = 0, right = 1;
            for (int t = 0; t < T; t++) {
                int n = b * T + t;
                if (mask[n]) {
                    any = 1;
                    if (argmax[n] != targets[n]) { right = 0; }
                }
            }
            s.num_examples += any;
            s.num_correct += any && right;
        }
    }
    return s;
}

#endif // LLMC_LOSS_H
