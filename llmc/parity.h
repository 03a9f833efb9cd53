/*
parity.h: the parity files that let tests check a trainer against the
PyTorch reference without scraping stdout (README "File formats"; Python side
in dev/parity_files.py).

  parity batch      magic 20261123 v1: [2] B, [3] T, [4] has_mask; then B*T
                    int32 inputs, B*T int32 targets, and if has_mask B*T int32
                    mask (1 = the position counts in the loss).
  parity gradients  magic 20261124 v1: [2] B, [3] T, [4] Vp, [5] P, [6] L, [7] C,
                    [8] untied_head (0/1), [9] LoRA rank r (0: none), [10] LoRA target
                    mask; then float32 loss, B*T*Vp float32 logits, then the gradients
                    of the trained floats: without LoRA the P floats of the 16 tensors
                    (and lm_head when untied) in checkpoint order, with LoRA ([5] = Q)
                    the adapters' in the adapter block's order (llmc/lora.h).
  parity losses     magic 20261125 v1: [2] N; then N float32 losses.
  parity attention  magic 20261128 v1: [2] L, [3] B, [4] NH, [5] T; then the attention
                    weights (L, B, NH, T, T) float32 of the parity batch's forward
                    (softmax rows, zero above the diagonal; CPU trainer only).

Contract: parity_batch_read validates header (B*T within train_limits.h), exact size, mask values 0/1 and
(given the model's V and maxT) every token id and T; it is fatal with a
message naming the file otherwise. The writers are atomic.
*/
#ifndef LLMC_PARITY_H
#define LLMC_PARITY_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "train_limits.h"
#include "utils.h"

#define PARITY_BATCH_MAGIC 20261123
#define PARITY_GRADS_MAGIC 20261124
#define PARITY_LOSSES_MAGIC 20261125
#define PARITY_ATTENTION_MAGIC 20261128
#define PARITY_VERSION 1
#define PARITY_FIX "Re-create it with the tool or test that wrote it (or check the path)."

typedef struct {
    int B, T;
    int* inputs;   // (B, T)
    int* targets;  // (B, T)
    int* mask;     // (B, T) 0/1, or NULL when the file has none
} ParityBatch;

static inline void parity_batch_read(ParityBatch* pb, const char* path, int V, int maxT) {
    int32_t h[HEADER_INTS];
    long long size = read_header_checked(path, "parity batch", PARITY_BATCH_MAGIC, PARITY_VERSION, h,
                                         PARITY_FIX);
    int B = h[2], T = h[3], has_mask = h[4];
    if (B < 1 || T < 1 || (long long)B * T > TRAIN_MAX_TOKENS_PER_STEP || (has_mask != 0 && has_mask != 1)) {
        fatal("parity batch %s has header B=%d T=%d has_mask=%d, expected B >= 1, T >= 1, B*T at most %d, "
              "has_mask 0 or 1. %s", path, B, T, has_mask, TRAIN_MAX_TOKENS_PER_STEP, PARITY_FIX);
    }
    size_t n = (size_t)B * (size_t)T;
    char what[128];
    snprintf(what, sizeof(what), "1024-byte header + 4 * B*T * %d with B=%d T=%d", 2 + has_mask, B, T);
    check_file_size(path, "parity batch", size, (long long)(HEADER_BYTES + 4 * n * (size_t)(2 + has_mask)),
                    what, PARITY_FIX);
    if (T > maxT) {
        fatal("parity batch %s has T=%d, more than the model's context maxT=%d; write a batch with "
              "T <= %d", path, T, maxT, maxT);
    }
    pb->B = B;
    pb->T = T;
    pb->inputs = (int*)mallocCheck(n * sizeof(int));
    pb->targets = (int*)mallocCheck(n * sizeof(int));
    pb->mask = has_mask ? (int*)mallocCheck(n * sizeof(int)) : NULL;
    FILE* fp = fopenCheck(path, "rb");
    fseekCheck(fp, (off_t)HEADER_BYTES, SEEK_SET);
    freadCheck(pb->inputs, sizeof(int), n, fp);
    freadCheck(pb->targets, sizeof(int), n, fp);
    if (has_mask) { freadCheck(pb->mask, sizeof(int), n, fp); }
    fcloseCheck(fp);
    size_t scored = 0;
    for (size_t i = 0; i < n; i++) {
        const char* bad = NULL;
        int val = 0;
        if (pb->inputs[i] < 0 || pb->inputs[i] >= V) { bad = "input"; val = pb->inputs[i]; }
        else if (pb->targets[i] < 0 || pb->targets[i] >= V) { bad = "target"; val = pb->targets[i]; }
        if (bad) {
            fatal("parity batch %s: %s token id %d at row %zu position %zu is outside [0, V=%d) of the "
                  "model. %s", path, bad, val, i / (size_t)T, i % (size_t)T, V, PARITY_FIX);
        }
        if (has_mask) {
            if (pb->mask[i] != 0 && pb->mask[i] != 1) {
                fatal("parity batch %s: mask value %d at row %zu position %zu, expected 0 or 1. %s",
                      path, pb->mask[i], i / (size_t)T, i % (size_t)T, PARITY_FIX);
            }
            scored += (size_t)pb->mask[i];
        }
    }
    if (has_mask && scored == 0) {
        fatal("parity batch %s: its mask selects no position, so the loss is undefined. %s", path, PARITY_FIX);
    }
}

static inline void parity_batch_free(ParityBatch* pb) {
    free(pb->inputs);
    free(pb->targets);
    free(pb->mask);
    memset(pb, 0, sizeof(*pb));
}

// logits: (B, T, Vp); grads: the P gradient floats in checkpoint order, or with lora_rank > 0 the
// P = Q adapter gradients.
static inline void parity_grads_write(const char* path, int B, int T, int Vp, size_t P, int L, int C,
                                      int untied_head, int lora_rank, int lora_mask, float loss, const float* logits,
                                      const float* grads) {
    int32_t h[HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = PARITY_GRADS_MAGIC;
    h[1] = PARITY_VERSION;
    h[2] = B;
    h[3] = T;
    h[4] = Vp;
    if (P > (size_t)INT32_MAX) { fatal("parity gradients: P=%zu does not fit the int32 header slot", P); }
    h[5] = (int32_t)P;
    h[6] = L;
    h[7] = C;
    h[8] = untied_head;
    h[9] = lora_rank;
    h[10] = lora_rank > 0 ? lora_mask : 0;
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, h, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, &loss, sizeof(float), 1);
    atomic_file_write(&af, logits, sizeof(float), (size_t)B * (size_t)T * (size_t)Vp);
    atomic_file_write(&af, grads, sizeof(float), P);
    atomic_file_commit(&af);
}

static inline void parity_attention_write(const char* path, int L, int B, int NH, int T, const float* att) {
    int32_t h[HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = PARITY_ATTENTION_MAGIC;
    h[1] = PARITY_VERSION;
    h[2] = L;
    h[3] = B;
    h[4] = NH;
    h[5] = T;
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, h, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, att, sizeof(float), (size_t)L * B * NH * T * T);
    atomic_file_commit(&af);
}

static inline void parity_losses_write(const char* path, const float* losses, int n) {
    int32_t h[HEADER_INTS];
    memset(h, 0, sizeof(h));
    h[0] = PARITY_LOSSES_MAGIC;
    h[1] = PARITY_VERSION;
    h[2] = n;
    AtomicFile af;
    atomic_file_open(&af, path);
    atomic_file_write(&af, h, sizeof(int32_t), HEADER_INTS);
    atomic_file_write(&af, losses, sizeof(float), (size_t)n);
    atomic_file_commit(&af);
}

#endif // LLMC_PARITY_H
