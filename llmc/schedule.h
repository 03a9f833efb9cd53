/*
schedule.h: the learning rate at each optimizer step.

Contract: lr_at(&s, step) for step = 1..total_steps (the step-th update),
with s0 = step - 1 (0-based) and W = warmup steps:
  warmup       s0 < W:  lr * (s0 + 1) / W            (every schedule)
  constant     else:    lr
  cosine       else:    min + (lr - min) * 0.5 * (1 + cos(pi * r))
  linear       else:    lr - (lr - min) * r
  with r = (s0 - W) / (total_steps - W) in [0, 1) and min = lr * min_lr_frac.
This is llm.c's convention: the first step after warmup runs at the full lr
and the decay approaches (but does not reach) min on the last step. Computed
in double, returned as float; the same numbers on every platform.
*/
#ifndef LLMC_SCHEDULE_H
#define LLMC_SCHEDULE_H

#include <math.h>
#include <string.h>

#define LR_CONSTANT 0
#define LR_COSINE 1
#define LR_LINEAR 2

static const char* const LR_SCHEDULE_NAMES[] = {"constant", "cosine", "linear", NULL};

typedef struct {
    int kind;           // LR_CONSTANT, LR_COSINE, LR_LINEAR
    double max_lr;      // lr after warmup
    int warmup;         // W
    int total_steps;    // steps the decay spans
    double min_lr_frac; // floor = max_lr * min_lr_frac
} LrSchedule;

// LR_* for a name, -1 when unknown
static inline int lr_schedule_kind(const char* name) {
    for (int i = 0; LR_SCHEDULE_NAMES[i] != NULL; i++) {
        if (strcmp(name, LR_SCHEDULE_NAMES[i]) == 0) { return i; }
    }
    return -1;
}

static inline float lr_at(const LrSchedule* s, int step) {
    int s0 = step - 1;
    if (s->warmup > 0 && s0 < s->warmup) {
        return (float)(s->max_lr * (double)(s0 + 1) / (double)s->warmup);
    }
    if (s->kind == LR_CONSTANT) { return (float)s->max_lr; }
    double min_lr = s->max_lr * s->min_lr_frac;
    int span = s->total_steps - s->warmup;
    double r = span > 0 ? (double)(s0 - s->warmup) / (double)span : 0.0;
    if (r < 0.0) { r = 0.0; }
    if (r > 1.0) { r = 1.0; }
    if (s->kind == LR_COSINE) {
        const double pi = 3.14159265358979323846;
        return (float)(min_lr + (s->max_lr - min_lr) * 0.5 * (1.0 + cos(pi * r)));
    }
    return (float)(s->max_lr - (s->max_lr - min_lr) * r);
}

#endif // LLMC_SCHEDULE_H
