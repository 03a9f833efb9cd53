/*
train_config.h: the trainers' command line, shared by train_gpt2.c and
train_gpt2_fp32.cu so both take the same flags with the same defaults.

Contract: train_config_defaults() fills every setting; train_config_specs()
writes the ArgSpec table (llm.c's short flags where llm.c has them, a long
flag for everything) and returns how many it wrote, so a trainer can append
its own flags before calling args_parse(); train_config_check() rejects
inconsistent values with a message naming the flag; train_config_json()
writes every setting into a JSON object (the log's "config" record).
Sentinels: -t 0 = the model's context (or E-1 for example data); --steps -1 =
one epoch of the training data; -v 0, -s 0 = never; -m -1 = the whole
validation set; --save-every 0 = only at the end; --grad-clip 0 = off;
--top-k 0 and --top-p 1 = off; --threads 0 = OpenMP's default; --classifier-rows 0 =
automatic (llmc/loss.h).
*/
#ifndef LLMC_TRAIN_CONFIG_H
#define LLMC_TRAIN_CONFIG_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "logger.h"
#include "schedule.h"
#include "train_limits.h"
#include "utils.h"

static const char* const DECAY_PARAM_CHOICES[] = {"all", "matrices", NULL};
static const char* const VAL_SCHEDULE_CHOICES[] = {"every", "log", NULL};

typedef struct {
    // data and files
    const char* train_data;    // -i  glob of training shards
    const char* val_data;      // -j  glob of validation shards ("" = none)
    const char* output_dir;    // -o  log, checkpoints ("" = none)
    const char* model;         // -e/--model  checkpoint to start from
    const char* resume;        // --resume  state file to continue from
    const char* tokenizer;     // --tokenizer  for decoding samples ("" = print ids)
    // batch and length
    int batch_size;            // -b  B
    int seq_len;               // -t  T (0 = model maxT, or E-1 for example data)
    int steps;                 // -x/--steps total optimizer steps (-1 = one epoch)
    // optimizer
    float lr;                  // -l
    const char* lr_schedule;   // --lr-schedule constant|cosine|linear
    int warmup;                // -u/--warmup
    float min_lr_frac;         // -q/--min-lr-frac
    float weight_decay;        // -c/--weight-decay
    const char* decay_params;  // --decay-params all|matrices
    float beta1, beta2, eps;   // --beta1 --beta2 --eps
    float grad_clip;           // --grad-clip (0 = off)
    // research regularizers (llmc/regularizers.h)
    float dropout;             // --dropout p at the four sites (0 = off)
    int decay_toward_init;     // --decay-toward-init 1: weight decay pulls toward the initial values
    float weight_noise;        // --weight-noise sigma of the Gaussian weight noise (0 = off)
    // evaluation, sampling, checkpoints
    int val_every;             // -v
    const char* val_schedule;  // --val-schedule every|log: every -v steps, or -v then log-spaced
    const char* eval_sets;     // --eval-sets "name=glob,name=glob": more sets evaluated with -j
    int val_batches;           // -m
    int sample_every;          // -s
    int gen_tokens;            // -g
    float temperature;         // --temperature (0 = greedy)
    int top_k;                 // --top-k
    float top_p;               // --top-p
    long long seed;            // --seed
    int save_every;            // -n/--save-every
    int threads;               // --threads
    int classifier_rows;       // --classifier-rows positions per chunk of the fused classifier (0 = automatic)
    // low-rank adapters (llmc/lora.h)
    int lora_rank;             // --lora-rank r (0 = off: every parameter trains)
    float lora_alpha;          // --lora-alpha (scale alpha / r)
    const char* lora_targets;  // --lora-targets qkvw,attprojw,fcw,fcprojw
    const char* lora_adapter;  // --lora-adapter FILE: start from these adapters
    // parity mode
    const char* parity_batch;  // --parity-batch
    const char* parity_out;    // --parity-out
    const char* parity_losses; // --parity-losses
    const char* parity_attention;  // --parity-attention: the attention weights of the parity pass
} TrainConfig;

static inline void train_config_defaults(TrainConfig* c) {
    memset(c, 0, sizeof(*c));
    c->train_data = "data/tinystories/TinyStories_train*.bin";
    c->val_data = "data/tinystories/TinyStories_val.bin";
    c->output_dir = "";
    c->model = "out/d4.bin";
    c->resume = "";
    c->tokenizer = "data/tinystories/gpt2_tokenizer.bin";
    c->batch_size = 4;
    c->seq_len = 0;
    c->steps = -1;
    c->lr = 3e-4f;
    c->lr_schedule = "cosine";
    c->warmup = 0;
    c->min_lr_frac = 0.1f;
    c->weight_decay = 0.0f;
    c->decay_params = "all";
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->grad_clip = 1.0f;
    c->dropout = 0.0f;
    c->decay_toward_init = 0;
    c->weight_noise = 0.0f;
    c->val_every = 20;
    c->val_schedule = "every";
    c->eval_sets = "";
    c->val_batches = 20;
    c->sample_every = 20;
    c->gen_tokens = 64;
    c->temperature = 1.0f;
    c->top_k = 0;
    c->top_p = 1.0f;
    c->seed = 1337;
    c->save_every = 0;
    c->threads = 0;
    c->lora_rank = 0;
    c->lora_alpha = 8.0f;
    c->lora_targets = "qkvw";
    c->lora_adapter = "";
    c->parity_batch = "";
    c->parity_out = "";
    c->parity_losses = "";
    c->parity_attention = "";
}

#define TRAIN_CONFIG_MAX_SPECS 56

// Writes the shared flag table into specs (room for TRAIN_CONFIG_MAX_SPECS);
// returns the number written. A trainer appends its own flags after them.
static inline int train_config_specs(TrainConfig* c, ArgSpec* specs) {
    int n = 0;
#define SPEC(s, l, t, d, h, ch) do { \
        if (n >= TRAIN_CONFIG_MAX_SPECS) { fatal("internal: raise TRAIN_CONFIG_MAX_SPECS in llmc/train_config.h"); } \
        ArgSpec a_ = {s, l, t, d, h, ch}; specs[n++] = a_; } while (0)
    SPEC('i', "train-data", ARG_STRING, &c->train_data, "training shards: a file or a quoted glob", NULL);
    SPEC('j', "val-data", ARG_STRING, &c->val_data, "validation shards (\"\" = no validation)", NULL);
    SPEC('o', "output-dir", ARG_STRING, &c->output_dir, "folder for log.jsonl and checkpoints (\"\" = none)", NULL);
    SPEC('e', "model", ARG_STRING, &c->model, "model checkpoint to start from (create_model.py writes one)", NULL);
    SPEC(0, "resume", ARG_STRING, &c->resume, "continue from DIR/state_NNNNNN.bin (uses DIR/model_NNNNNN.bin beside it)", NULL);
    SPEC(0, "tokenizer", ARG_STRING, &c->tokenizer, "tokenizer file to decode samples (missing = print token ids)", NULL);
    SPEC('b', "batch-size", ARG_INT, &c->batch_size, "B, sequences per step", NULL);
    SPEC('t', "seq-len", ARG_INT, &c->seq_len, "T, tokens per sequence (0 = the model's context, or E-1 for example shards)", NULL);
    SPEC('x', "steps", ARG_INT, &c->steps, "total optimizer steps (-1 = one epoch of the training data; with --resume, the resumed run's total)", NULL);
    SPEC('l', "lr", ARG_FLOAT, &c->lr, "peak learning rate", NULL);
    SPEC(0, "lr-schedule", ARG_CHOICE, &c->lr_schedule, "decay after warmup", LR_SCHEDULE_NAMES);
    SPEC('u', "warmup", ARG_INT, &c->warmup, "linear warmup steps", NULL);
    SPEC('q', "min-lr-frac", ARG_FLOAT, &c->min_lr_frac, "the decay's floor as a fraction of -l", NULL);
    SPEC('c', "weight-decay", ARG_FLOAT, &c->weight_decay, "AdamW decoupled weight decay", NULL);
    SPEC(0, "decay-params", ARG_CHOICE, &c->decay_params, "tensors that decay (matrices = wte wpe qkvw attprojw fcw fcprojw)", DECAY_PARAM_CHOICES);
    SPEC(0, "beta1", ARG_FLOAT, &c->beta1, "AdamW beta1", NULL);
    SPEC(0, "beta2", ARG_FLOAT, &c->beta2, "AdamW beta2", NULL);
    SPEC(0, "eps", ARG_FLOAT, &c->eps, "AdamW epsilon", NULL);
    SPEC(0, "grad-clip", ARG_FLOAT, &c->grad_clip, "clip the global gradient norm to this (0 = off)", NULL);
    SPEC(0, "dropout", ARG_FLOAT, &c->dropout, "dropout rate in training: embeddings, attention weights, attention and MLP outputs (0 = off)", NULL);
    SPEC(0, "decay-toward-init", ARG_INT, &c->decay_toward_init, "1: weight decay pulls each parameter toward its initial value instead of 0", NULL);
    SPEC(0, "weight-noise", ARG_FLOAT, &c->weight_noise, "std of Gaussian noise added to the weights for each step's forward/backward (0 = off)", NULL);
    SPEC('v', "val-every", ARG_INT, &c->val_every, "evaluate every N steps and at the end (0 = never)", NULL);
    SPEC(0, "val-schedule", ARG_CHOICE, &c->val_schedule, "every: every -v steps; log: every max(v, 10^(digits of the step - 2)) steps, dense early and sparse late (-v 10: every 10 steps to 999, 100 to 9,999, 1,000 to 99,999)", VAL_SCHEDULE_CHOICES);
    SPEC(0, "eval-sets", ARG_STRING, &c->eval_sets, "more example or token sets evaluated whenever -j is, as \"name=glob,name=glob\" (the whole set each time; e.g. train=data/train.bin for clean training accuracy)", NULL);
    SPEC('m', "val-batches", ARG_INT, &c->val_batches, "validation batches per evaluation (-1 = all)", NULL);
    SPEC('s', "sample-every", ARG_INT, &c->sample_every, "sample every N steps and at the end (0 = never)", NULL);
    SPEC('g', "gen-tokens", ARG_INT, &c->gen_tokens, "tokens to generate per sample", NULL);
    SPEC(0, "temperature", ARG_FLOAT, &c->temperature, "sampling temperature (0 = greedy)", NULL);
    SPEC(0, "top-k", ARG_INT, &c->top_k, "sample from the k most likely tokens (0 = off)", NULL);
    SPEC(0, "top-p", ARG_FLOAT, &c->top_p, "nucleus sampling mass (1 = off)", NULL);
    SPEC(0, "seed", ARG_INT64, &c->seed, "seed for the data order and sampling", NULL);
    SPEC('n', "save-every", ARG_INT, &c->save_every, "checkpoint every N steps (0 = only at the end; needs -o)", NULL);
    SPEC(0, "threads", ARG_INT, &c->threads, "CPU threads (0 = OpenMP default / OMP_NUM_THREADS)", NULL);
    SPEC(0, "classifier-rows", ARG_INT, &c->classifier_rows, "positions per chunk of the classifier's logits (0 = automatic: 64 MB of logits on the CPU, 256 MB on the GPU); changes results only by rounding", NULL);
    SPEC(0, "lora-rank", ARG_INT, &c->lora_rank, "LoRA: train adapters of this rank on the --lora-targets matrices, the base model frozen (0 = off: train every parameter)", NULL);
    SPEC(0, "lora-alpha", ARG_FLOAT, &c->lora_alpha, "LoRA: the adapters' scale is alpha / rank (PEFT's lora_alpha)", NULL);
    SPEC(0, "lora-targets", ARG_STRING, &c->lora_targets, "LoRA: matrices that get adapters, comma-separated from qkvw, attprojw, fcw, fcprojw (transformers' attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)", NULL);
    SPEC(0, "lora-adapter", ARG_STRING, &c->lora_adapter, "LoRA: start from this adapter file (it sets rank, alpha and targets) instead of new adapters", NULL);
    SPEC(0, "parity-batch", ARG_STRING, &c->parity_batch, "parity mode: train on this batch file instead of shards", NULL);
    SPEC(0, "parity-out", ARG_STRING, &c->parity_out, "parity mode: write loss, logits and the gradients (the 16 tensors, or the LoRA adapters) here, then exit", NULL);
    SPEC(0, "parity-losses", ARG_STRING, &c->parity_losses, "parity mode: write the per-step losses of --steps steps here", NULL);
    SPEC(0, "parity-attention", ARG_STRING, &c->parity_attention, "parity mode, with --parity-out: also write the attention weights (L, B, NH, T, T) of the pass here (CPU trainer)", NULL);
#undef SPEC
    return n;
}

// Whether step (1-based) is an evaluation step of -v every and --val-schedule (the last step is
// always evaluated, by the caller).
static inline int val_due(const TrainConfig* c, int step) {
    if (c->val_every <= 0) { return 0; }
    long long interval = c->val_every;
    if (strcmp(c->val_schedule, "log") == 0) {
        long long p = 1;  // 10^(digits of step - 1)
        while (p * 10 <= step) { p *= 10; }
        if (p / 10 > interval) { interval = p / 10; }
    }
    return step % interval == 0;
}

static inline void train_config_check(const TrainConfig* c) {
    if (c->batch_size < 1) { fatal("-b (batch size) must be >= 1, got %d", c->batch_size); }
    if (c->seq_len < 0) { fatal("-t (sequence length) must be >= 1, or 0 for the model's context; got %d", c->seq_len); }
    if (c->steps < -1 || c->steps == 0 || c->steps > TRAIN_MAX_STEPS) {
        fatal("--steps must be 1 to %d, or -1 for one epoch; got %d", TRAIN_MAX_STEPS, c->steps);
    }
    if ((long long)c->batch_size * (c->seq_len > 0 ? c->seq_len : 1) > TRAIN_MAX_TOKENS_PER_STEP) {
        fatal("-b %d -t %d asks for %lld tokens per step, more than the %d these trainers allow (see "
              "llmc/train_limits.h): use a smaller -b or -t", c->batch_size, c->seq_len,
              (long long)c->batch_size * c->seq_len, TRAIN_MAX_TOKENS_PER_STEP);
    }
    if (c->lr < 0.0f) { fatal("-l (learning rate) must be >= 0, got %g", (double)c->lr); }
    if (c->warmup < 0 || c->warmup > TRAIN_MAX_STEPS) { fatal("--warmup must be 0 to %d, got %d", TRAIN_MAX_STEPS, c->warmup); }
    if (c->min_lr_frac < 0.0f || c->min_lr_frac > 1.0f) { fatal("--min-lr-frac must be in [0, 1], got %g", (double)c->min_lr_frac); }
    if (c->weight_decay < 0.0f) { fatal("--weight-decay must be >= 0, got %g", (double)c->weight_decay); }
    if (c->beta1 < 0.0f || c->beta1 >= 1.0f) { fatal("--beta1 must be in [0, 1), got %g", (double)c->beta1); }
    if (c->beta2 < 0.0f || c->beta2 >= 1.0f) { fatal("--beta2 must be in [0, 1), got %g", (double)c->beta2); }
    if (c->eps <= 0.0f) { fatal("--eps must be > 0, got %g", (double)c->eps); }
    if (c->grad_clip < 0.0f) { fatal("--grad-clip must be >= 0 (0 = off), got %g", (double)c->grad_clip); }
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) { fatal("--dropout must be in [0, 1) (0 = off), got %g", (double)c->dropout); }
    if (c->decay_toward_init != 0 && c->decay_toward_init != 1) { fatal("--decay-toward-init must be 0 or 1, got %d", c->decay_toward_init); }
    if (!(c->weight_noise >= 0.0f) || isinf(c->weight_noise)) { fatal("--weight-noise must be a finite value >= 0 (0 = off), got %g", (double)c->weight_noise); }
    if (c->val_every < 0) { fatal("-v (val every) must be >= 0 (0 = never), got %d", c->val_every); }
    if (c->val_batches < -1 || c->val_batches == 0) { fatal("-m (val batches) must be >= 1, or -1 for all; got %d", c->val_batches); }
    if (c->sample_every < 0) { fatal("-s (sample every) must be >= 0 (0 = never), got %d", c->sample_every); }
    if (c->gen_tokens < 1 || c->gen_tokens > SAMPLE_MAX_TOKENS) {
        fatal("-g (tokens to generate) must be 1 to %d (each token is one forward pass of the model, so "
              "more takes hours per sample), got %d", SAMPLE_MAX_TOKENS, c->gen_tokens);
    }
    if (c->temperature < 0.0f) { fatal("--temperature must be >= 0 (0 = greedy), got %g", (double)c->temperature); }
    if (c->top_k < 0) { fatal("--top-k must be >= 0 (0 = off), got %d", c->top_k); }
    if (c->top_p <= 0.0f || c->top_p > 1.0f) { fatal("--top-p must be in (0, 1] (1 = off), got %g", (double)c->top_p); }
    if (c->seed < 0) { fatal("--seed must be >= 0, got %lld", c->seed); }
    if (c->save_every < 0) { fatal("--save-every must be >= 0 (0 = only at the end), got %d", c->save_every); }
    if (c->threads < 0 || c->threads > TRAIN_MAX_THREADS) {
        fatal("--threads must be 0 (the default) to %d, got %d", TRAIN_MAX_THREADS, c->threads);
    }
    if (c->classifier_rows < 0 || c->classifier_rows > TRAIN_MAX_TOKENS_PER_STEP) {
        fatal("--classifier-rows must be 0 (automatic) to %d, got %d", TRAIN_MAX_TOKENS_PER_STEP, c->classifier_rows);
    }
    if (c->lora_rank < 0 || c->lora_rank > 4096) { fatal("--lora-rank must be 0 (off) to 4096, got %d", c->lora_rank); }
    if (!(c->lora_alpha > 0.0f) || isinf(c->lora_alpha)) { fatal("--lora-alpha must be a finite value > 0, got %g", (double)c->lora_alpha); }
    if (c->lora_adapter[0] && c->lora_rank > 0) {
        fatal("--lora-adapter %s sets the rank, alpha and targets itself: drop --lora-rank", c->lora_adapter);
    }
    if (c->resume[0] && (c->lora_rank > 0 || c->lora_adapter[0])) {
        fatal("--resume continues the run's own adapters (adapter_NNNNNN.bin beside the state): drop --lora-rank "
              "and --lora-adapter");
    }
    if ((c->lora_rank > 0 || c->lora_adapter[0]) && c->weight_noise > 0.0f) {
        fatal("--weight-noise perturbs every weight, but with LoRA the base model is frozen: train the adapters "
              "without it (drop --weight-noise) or train in full (drop --lora-rank / --lora-adapter)");
    }
    if ((c->lora_rank > 0 || c->lora_adapter[0]) && c->decay_toward_init) {
        fatal("--decay-toward-init with LoRA: the adapters start at B = 0, so plain weight decay already pulls "
              "the update s*B*A toward zero; drop --decay-toward-init");
    }
    if (c->save_every > 0 && !c->output_dir[0] && !c->resume[0]) {
        fatal("--save-every %d needs an output folder to save into: add -o DIR", c->save_every);
    }
    if (c->parity_out[0] && !c->parity_batch[0]) { fatal("--parity-out needs --parity-batch (the batch to run)"); }
    if (c->parity_losses[0] && !c->parity_batch[0]) { fatal("--parity-losses needs --parity-batch (the batch to train on)"); }
    if (c->parity_batch[0] && !c->parity_out[0] && !c->parity_losses[0]) {
        fatal("--parity-batch needs --parity-out (one forward/backward) or --parity-losses (N training steps)");
    }
    if (c->parity_attention[0] && !c->parity_out[0]) { fatal("--parity-attention needs --parity-out (one forward/backward)"); }
    if (c->parity_out[0] && c->parity_losses[0]) { fatal("give either --parity-out or --parity-losses, not both"); }
    if (c->parity_losses[0] && c->steps < 1) { fatal("--parity-losses needs --steps N (N >= 1)"); }
}

// Every setting of the flag table into the open JSON object j, keyed by long flag name.
static inline void train_config_json(Json* j, const ArgSpec* specs, int n) {
    for (int i = 0; i < n; i++) {
        const ArgSpec* s = &specs[i];
        switch (s->type) {
            case ARG_INT: json_key_int(j, s->long_name, *(const int*)s->dest); break;
            case ARG_INT64: json_key_int(j, s->long_name, *(const long long*)s->dest); break;
            case ARG_FLOAT: json_key_float(j, s->long_name, (double)*(const float*)s->dest); break;
            default: json_key_string(j, s->long_name, *(const char* const*)s->dest); break;
        }
    }
}

#endif // LLMC_TRAIN_CONFIG_H
