/*
train_limits.h: the bounds on what a run may ask for, shared by the flag checks
(train_config.h) and the file readers (train_state.h, parity.h), so a value a
flag may not take cannot come in through a file either.

Each bound is far above what these trainers can do in practice, and each keeps
the arithmetic around it exact:
- TRAIN_MAX_STEPS: --steps, a state's step and total steps. A step counter
  that stays below 2^30 can never overflow an int, even as step + 1.
- TRAIN_MAX_TOKENS_PER_STEP: B*T (-b times -t, a parity batch, a state). 2^24
  tokens of activations are terabytes for any model worth training here, and
  B*T stays an exact int.
- SAMPLE_MAX_TOKENS: -g. Every sampled token is one forward pass over up to T
  tokens, so 65536 tokens are already hours of sampling at each -s.
- TRAIN_MAX_THREADS: --threads. More OpenMP threads than this only slow a run
  down (the work is split into at most a few dozen pieces) and can fail to start.
*/
#ifndef LLMC_TRAIN_LIMITS_H
#define LLMC_TRAIN_LIMITS_H

#define TRAIN_MAX_STEPS (1 << 30)
#define TRAIN_MAX_TOKENS_PER_STEP (1 << 24)
#define SAMPLE_MAX_TOKENS 65536
#define TRAIN_MAX_THREADS 256

#endif // LLMC_TRAIN_LIMITS_H
