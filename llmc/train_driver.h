/*
train_driver.h: the whole training run, shared by train_gpt2.c and train_gpt2_fp32.cu.

A trainer's main is `return train_main(argc, argv, &backend);`. Everything a run does
besides the model's arithmetic happens here, once for both trainers:
  1. flags (llmc/train_config.h plus the backend's own), their checks;
  2. the model: from --model, or the model file beside the --resume state (same step),
     checked against the state (parameter count, checksum, batch geometry, seed); with LoRA
     (llmc/lora.h) the adapters: new (--lora-rank), a file's (--lora-adapter) or the resumed
     run's adapter_NNNNNN.bin, checked against the base model and the state;
  3. the batch geometry: the parity batch's B and T, or -b with -t (token shards) or E-1
     (example shards), each checked against the model's context maxT;
  4. the backend's memory check and kernel choices (prepare), then the data loaders
     (train, validation), the tokenizer for samples (its vocabulary must match the model);
  5. buffers (allocate), the schedule and AdamW settings, the configuration table;
  6. parity mode 1 (--parity-out): one forward/backward, logits and gradients written, exit;
  7. the output folder (locked, llmc/utils.h output_dir_claim) and the log's header record;
  8. a resumed run's optimizer state, data position and sampler state;
  9. the step loop: batch, train step, the NaN stop (training_diverged), the step line and
     log record, evaluation every -v steps and at the end, samples every -s steps and at the
     end, checkpoints (model + state, and the adapters with LoRA) every -n steps and at the end;
 10. parity mode 2 (--parity-losses): the losses of every step written;
 11. cleanup: everything freed (the sanitizer builds check for leaks).

The backend (TrainerBackend below) supplies only what differs between the trainers: its
name and extra flags, the model functions (load, prepare, allocate, forward, forward and
backward of a training step, gradient norm, AdamW update, parameter norm, next-token logits,
parity outputs, destroy), its config-table rows, log keys
and hardware description, and the host<->device copies of the parameters and optimizer
state. The CPU backend's copies are no-ops (host pointers); the CUDA backend's stage
through host mirrors.

The NaN stop: training_diverged(...) returns 0 when the step's loss, gradient norm and
the parameters' norm after the update (0 when the update did not run) are all finite.
Otherwise it prints "error: the <loss | gradient norm | parameters after the update> is
<NaN | infinite> at step N ...: training diverged" naming the last good checkpoint (or the
model the run started from), logs an {"step", "error"} record, and returns 1: the loop
stops without saving, so no checkpoint with a non-finite value is ever written and the
last good one stays as it was. The loss and gradient norm are checked before the update
(which then does not run), the parameters after it, since a finite gradient with a huge
learning rate or weight decay can still overflow them (-l 1e38 -c 10).
*/
#ifndef LLMC_TRAIN_DRIVER_H
#define LLMC_TRAIN_DRIVER_H

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "args.h"
#include "checkpoint.h"
#include "dataloader.h"
#include "gpt2_params.h"
#include "logger.h"
#include "lora.h"
#include "loss.h"
#include "parity.h"
#include "rand.h"
#include "regularizers.h"
#include "sampler.h"
#include "schedule.h"
#include "tokenizer.h"

#define MAX_EVAL_SETS 8  // --eval-sets
#include "train_config.h"
#include "train_state.h"
#include "utils.h"

#ifndef GIT_COMMIT
#define GIT_COMMIT "unknown"
#endif

// What one training step reports.
typedef struct {
    float loss;
    float grad_norm;   // before clipping
    float lr;
    float grad_scale;  // clip / norm when clipped, else 1
    int num_correct, num_examples;  // example data: examples whose every scored target is the argmax
} StepResult;

// Host arrays of the parameters (P floats) and of the optimizer state over the N trained floats:
// all P parameters, or with LoRA the Q adapter floats (adapters, frozen params). init is NULL
// unless --decay-toward-init keeps the parameters before step 1; adapters is NULL without LoRA.
typedef struct {
    float* params;
    float* m;
    float* v;
    float* init;
    float* adapters;
} HostTensors;

typedef struct {
    const char* name;         // the binary: usage text, the log's "trainer"
    const char* parity_hint;  // appended to the parity usage lines ("" or " --tf32 0")
    const ArgSpec* extra_specs;  // the backend's own flags, appended to train_config's
    int num_extra_specs;
    // after the flags are parsed and checked: the backend's own checks and setup
    void (*configure)(const TrainConfig* cfg);
    // the model from a checkpoint; fills its config, parameter count and host parameters
    void* (*load)(const char* path, const GPT2Config** config, size_t* num_parameters, const float** params_host);
    // once the batch geometry is known, before any data is read: memory checks, kernel choices;
    // lora->rank > 0: the run trains those adapters (llmc/lora.h) and the parameters are frozen
    void (*prepare)(void* model, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits,
                    const char* model_path);
    // gradients and optimizer state (of the adapters only with LoRA), activations and the
    // regularizers' buffers (seed, dropout, clean parameters for --weight-noise, initial parameters
    // for --decay-toward-init); the adapters' values come later, through host_tensors + upload_state
    void (*allocate)(void* model, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits);
    void (*print_rows)(void* model);              // the backend's rows of the configuration table
    void (*log_config)(void* model, Json* j);     // its keys in the log's "config" object
    void (*hardware)(void* model, char* buf, size_t n);  // the log's "hardware"
    // forward with targets, no dropout (evaluation): the loss bookkeeping of llmc/loss.h
    LossSummary (*forward)(void* model, const int* inputs, const int* targets, const int* mask, int B, int T);
    // the forward and backward of training step `step` (with its dropout masks, and at noisy
    // weights with weight_noise > 0: the clean parameters come back afterwards), gradients zeroed
    // first; the loss bookkeeping of llmc/loss.h
    LossSummary (*forward_backward)(void* model, const int* inputs, const int* targets, const int* mask, int B,
                                    int T, int step, float weight_noise);
    double (*grad_norm)(void* model);             // sqrt(sum g^2) over the trained floats' gradients
    // AdamW step t with learning rate lr on the gradients times grad_scale
    void (*update)(void* model, const AdamWSettings* opt, float lr, float grad_scale, int t);
    double (*param_norm)(void* model);            // sqrt(sum p^2) over the trained floats
    // logits (Vp, host) of the position after tokens[0..n-1], a sliding window of at most T
    const float* (*next_token_logits)(void* model, const int* tokens, int n);
    // after forward_backward: the (B, T, Vp) logits and the N gradients on the host (--parity-out)
    void (*parity_outputs)(void* model, const float** logits, const float** grads);
    // after forward_backward: the attention weights (L, B, NH, T, T) on the host, zero above the
    // diagonal (--parity-attention); NULL where the backend never forms them
    const float* (*attention_weights)(void* model);
    // the host arrays; download = 1 first copies the current values from the device
    HostTensors (*host_tensors)(void* model, int download);
    void (*upload_state)(void* model);            // m, v (and init, adapters) host -> device
    void (*destroy)(void* model);
} TrainerBackend;

static inline void print_row(const char* name, const char* fmt, ...) LLMC_PRINTF(2, 3);
static inline void print_row(const char* name, const char* fmt, ...) {
    char val[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    printf("| %-22s | %-50s |\n", name, val);
}

static inline int training_diverged(Logger* logger, Json* j, int step, float loss, float grad_norm,
                                    double param_norm, float lr, const char* out_dir, int last_saved,
                                    const char* start_model) {
    const char* what;
    double bad;
    if (!isfinite(loss)) { what = "loss"; bad = loss; }
    else if (!isfinite(grad_norm)) { what = "gradient norm"; bad = grad_norm; }
    else if (!isfinite(param_norm)) { what = "parameters after the update"; bad = param_norm; }
    else { return 0; }
    char* last = last_saved >= 0 ? str_printf("%s/model_%06d.bin", out_dir, last_saved) : NULL;
    fflush(stdout);
    fprintf(stderr, "error: the %s %s %s at step %d (loss %g, grad norm %g, lr %g): training diverged. "
            "Stopping without saving; %s%s. Try a lower -l, --weight-decay or --grad-clip.\n", what,
            what[0] == 'p' ? "are" : "is", isnan(bad) ? "NaN" : "infinite", step, (double)loss,
            (double)grad_norm, (double)lr,
            last ? "the last good checkpoint is " : "no checkpoint of this run was saved; it started from ",
            last ? last : start_model);
    if (logger->fp) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%s %s not finite", what, what[0] == 'p' ? "are" : "is");
        json_begin(j);
        json_key_int(j, "step", step);
        json_key_string(j, "error", msg);
        json_key_float(j, "train_loss", loss);
        json_key_float(j, "grad_norm", grad_norm);
        json_end(j);
        logger_write(logger, j);
    }
    free(last);
    return 1;
}

// Everything one run holds, so the stages below can be read one at a time.
typedef struct {
    const TrainerBackend* be;
    TrainConfig cfg;
    ArgSpec specs[TRAIN_CONFIG_MAX_SPECS + 8];
    int nspecs;
    int parity, parity_grads, resuming, sampling;
    TrainState resume_state;
    char* model_path;
    void* model;
    const GPT2Config* mc;
    size_t num_parameters;
    uint64_t model_checksum;                   // hash_words of the model's P floats as loaded
    LoraConfig lora;                           // rank 0: every parameter trains
    float* lora_start;                         // the adapters to start from (a file's), NULL: new ones
    char* lora_start_path;
    size_t num_trained;                        // N: P, or the adapters' Q
    ParityBatch pb;
    int B, T, data_kind, example_len;
    DataLoader train_loader, val_loader;
    int have_train, have_val;
    int num_eval_sets;                         // --eval-sets
    char eval_names[MAX_EVAL_SETS][64];
    DataLoader eval_loaders[MAX_EVAL_SETS];
    int total_steps, start_step;
    const char* out_dir;
    char* resume_dir;
    Tokenizer tokenizer;
    LrSchedule sched;
    AdamWSettings opt;
    Logger logger;
    Json j;
    Rng sample_rng;
    double elapsed_before;
} TrainRun;

typedef struct {
    double loss;
    double acc;  // example data only, else NAN
} EvalResult;

// Mean loss over `max_batches` batches (-1 = all) of a set, from its start, with the clean
// model (no dropout, no weight noise). Token data: mean of the batch means (every batch has
// B*T positions). Example data: sum over scored targets / their count, and the fraction of
// examples whose every scored target is the argmax.
static inline EvalResult train_evaluate(TrainRun* run, DataLoader* val, int max_batches) {
    dataloader_reset(val);
    size_t n = val->batches_per_epoch;
    if (max_batches > 0 && (size_t)max_batches < n) { n = (size_t)max_batches; }
    double loss_sum = 0.0;
    size_t scored = 0;
    long long correct = 0, examples = 0;
    for (size_t i = 0; i < n; i++) {
        dataloader_next_batch(val);
        LossSummary r = run->be->forward(run->model, val->inputs, val->targets, val->loss_mask, val->B, val->T);
        loss_sum += r.loss_sum;
        scored += r.num_scored;
        correct += r.num_correct;
        examples += r.num_examples;
    }
    EvalResult e;
    e.loss = scored > 0 ? loss_sum / (double)scored : NAN;
    e.acc = val->kind == DATA_EXAMPLES && examples > 0 ? (double)correct / (double)examples : NAN;
    return e;
}

// Generates gen_tokens tokens after start_token into tokens[1..].
static inline void train_sample(TrainRun* run, Sampler* sampler, int start_token, int* tokens) {
    tokens[0] = start_token;
    for (int i = 1; i <= run->cfg.gen_tokens; i++) {
        const float* logits = run->be->next_token_logits(run->model, tokens, i);
        tokens[i] = sampler_pick(sampler, logits, run->mc->vocab_size, rng_float(&run->sample_rng));
    }
}

// Writes DIR/model_NNNNNN.bin and DIR/state_NNNNNN.bin (all atomic) for st->step, and with LoRA
// DIR/adapter_NNNNNN.bin (the model file is then the frozen base model, unchanged).
static inline void train_save_checkpoint_pair(TrainRun* run, const TrainState* st_in) {
    char* model_path = str_printf("%s/model_%06d.bin", run->out_dir, st_in->step);
    char* state_path = str_printf("%s/state_%06d.bin", run->out_dir, st_in->step);
    char* adapter_path = str_printf("%s/adapter_%06d.bin", run->out_dir, st_in->step);
    HostTensors h = run->be->host_tensors(run->model, 1);
    TrainState st = *st_in;
    st.model_checksum = hash_words(h.params, run->num_parameters * sizeof(float));
    st.has_init_params = h.init != NULL;
    st.num_trained = run->num_trained;
    checkpoint_save(model_path, run->mc, h.params);
    if (run->lora.rank > 0) {
        st.lora = 1;
        st.adapter_checksum = hash_words(h.adapters, run->lora.total * sizeof(float));
        lora_save(adapter_path, &run->lora, st.model_checksum, h.adapters);
    }
    train_state_save(state_path, &st, h.m, h.v, h.init);
    if (run->lora.rank > 0) { printf("saved %s, %s and %s\n", model_path, adapter_path, state_path); }
    else { printf("saved %s and %s\n", model_path, state_path); }
    free(model_path);
    free(state_path);
    free(adapter_path);
}

// One training step on one batch: forward and backward, the global gradient norm, clipping
// (every gradient times clip / norm when the norm exceeds it), AdamW. Returns with r->loss or
// r->grad_norm not finite, and the parameters untouched, when training diverged.
static inline void train_step(TrainRun* run, const int* inputs, const int* targets, const int* mask, int step,
                              StepResult* r) {
    const TrainerBackend* be = run->be;
    LossSummary l = be->forward_backward(run->model, inputs, targets, mask, run->B, run->T, step,
                                         run->cfg.weight_noise);
    double norm = be->grad_norm(run->model);
    r->loss = l.mean_loss;
    r->grad_norm = (float)norm;
    r->lr = lr_at(&run->sched, step);
    r->num_correct = l.num_correct;
    r->num_examples = l.num_examples;
    r->grad_scale = 1.0f;
    if (!isfinite(r->loss) || !isfinite(norm)) { return; }
    float clip = run->cfg.grad_clip;
    if (clip > 0.0f && norm > (double)clip) { r->grad_scale = (float)((double)clip / norm); }
    be->update(run->model, &run->opt, r->lr, r->grad_scale, step);
}

// ---- stages ---------------------------------------------------------------------------------

static inline void train_parse_flags(TrainRun* run, int argc, char** argv) {
    const TrainerBackend* be = run->be;
    train_config_defaults(&run->cfg);
    run->nspecs = train_config_specs(&run->cfg, run->specs);
    if (be->num_extra_specs > 8) { fatal("internal: %s has more than 8 flags of its own", be->name); }
    for (int i = 0; i < be->num_extra_specs; i++) { run->specs[run->nspecs++] = be->extra_specs[i]; }
    char* usage = str_printf(
        "[flags]\n  train:         ./%s --model M.bin -i 'train*.bin' -j val.bin -o out/run\n"
        "  resume:        ./%s --resume out/run/state_000100.bin --steps 200\n"
        "  parity grads:  ./%s --model M.bin --parity-batch batch.bin --parity-out grads.bin%s\n"
        "  parity steps:  ./%s --model M.bin --parity-batch batch.bin --steps N --parity-losses losses.bin "
        "-o DIR%s", be->name, be->name, be->name, be->parity_hint, be->name, be->parity_hint);
    args_parse(argc, argv, run->specs, run->nspecs, usage);
    free(usage);
    train_config_check(&run->cfg);
    warn_ineffective_regularizers(&run->cfg);
    if (run->cfg.parity_attention[0] && be->attention_weights == NULL) {
        fatal("--parity-attention: %s's attention kernels never hold the weights of a whole layer; write them "
              "with the CPU trainer ./train_gpt2 (same flags)", be->name);
    }
    be->configure(&run->cfg);
    run->parity = run->cfg.parity_batch[0] != '\0';
    run->parity_grads = run->cfg.parity_out[0] != '\0';
    run->resuming = run->cfg.resume[0] != '\0';
}

// The model: from --model, or the model file beside the --resume state, which must match it.
static inline void train_resolve_model(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    if (run->resuming) {
        if (run->parity) { fatal("--resume cannot be combined with the parity mode (--parity-batch)"); }
        train_state_read_header(cfg->resume, &run->resume_state);
        char* dir = path_dirname(cfg->resume);
        run->model_path = str_printf("%s/model_%06d.bin", dir, run->resume_state.step);
        free(dir);
        if (!path_exists(run->model_path)) {
            fatal("training state %s is for step %d, but its model file %s is missing (a state file "
                  "resumes with the model_NNNNNN.bin of the same step beside it)",
                  cfg->resume, run->resume_state.step, run->model_path);
        }
    } else {
        run->model_path = str_dup(cfg->model);
    }
    const float* params = NULL;
    run->model = run->be->load(run->model_path, &run->mc, &run->num_parameters, &params);
    run->model_checksum = hash_words(params, run->num_parameters * sizeof(float));
    if (run->resuming) {
        if (run->resume_state.num_parameters != run->num_parameters) {
            fatal("training state %s holds %zu parameters but model %s has %zu: they do not belong together",
                  cfg->resume, run->resume_state.num_parameters, run->model_path, run->num_parameters);
        }
        if (run->model_checksum != run->resume_state.model_checksum) {
            fatal("model %s does not match training state %s (checksum differs): the model file was "
                  "replaced after the state was written", run->model_path, cfg->resume);
        }
    }
}

// LoRA (llmc/lora.h): new adapters (--lora-rank), a file's (--lora-adapter), or a resumed run's
// (DIR/adapter_NNNNNN.bin beside the state, which must match its checksum). Sets num_trained.
static inline void train_setup_lora(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    const GPT2Config* mc = run->mc;
    const TrainState* rs = &run->resume_state;
    run->num_trained = run->num_parameters;
    if (run->resuming && rs->lora) {
        char* dir = path_dirname(cfg->resume);
        run->lora_start_path = str_printf("%s/adapter_%06d.bin", dir, rs->step);
        free(dir);
        if (!path_exists(run->lora_start_path)) {
            fatal("training state %s is of a LoRA run, but its adapter file %s is missing (it resumes with the "
                  "adapter_NNNNNN.bin of the same step beside it)", cfg->resume, run->lora_start_path);
        }
        if (cfg->weight_noise > 0.0f) {
            fatal("--weight-noise with the LoRA run of %s: the base model is frozen; drop --weight-noise", cfg->resume);
        }
    } else if (cfg->lora_adapter[0]) {
        run->lora_start_path = str_dup(cfg->lora_adapter);
    } else if (cfg->lora_rank > 0) {
        int mask = lora_parse_targets(cfg->lora_targets);
        lora_check_settings(cfg->lora_rank, cfg->lora_alpha, mask, mc->channels, "--lora-rank");
        lora_setup(&run->lora, cfg->lora_rank, cfg->lora_alpha, mask, mc->num_layers, mc->channels);
    }
    if (run->lora_start_path) {
        run->lora_start = lora_load(run->lora_start_path, &run->lora, mc->num_layers, mc->channels,
                                    run->model_checksum, run->model_path);
        if (run->resuming && hash_words(run->lora_start, run->lora.total * sizeof(float)) != rs->adapter_checksum) {
            fatal("adapter file %s does not match training state %s (checksum differs): the adapter file was "
                  "replaced after the state was written", run->lora_start_path, cfg->resume);
        }
    }
    if (run->lora.rank > 0) {
        run->num_trained = run->lora.total;
        if (run->resuming && rs->num_trained != run->num_trained) {
            fatal("training state %s holds %zu trained floats but its adapters %s have %zu", cfg->resume,
                  rs->num_trained, run->lora_start_path, run->num_trained);
        }
    } else if (run->resuming && rs->num_trained != run->num_parameters) {
        fatal("training state %s holds %zu trained floats, the model %s has %zu parameters", cfg->resume,
              rs->num_trained, run->model_path, run->num_parameters);
    }
}

// The adapters' starting values into the backend's host array (a file's, or new ones from the
// seed), then to the device.
static inline void train_start_adapters(TrainRun* run) {
    if (run->lora.rank == 0) { return; }
    HostTensors h = run->be->host_tensors(run->model, 0);
    if (run->lora_start) {
        memcpy(h.adapters, run->lora_start, run->lora.total * sizeof(float));
        free(run->lora_start);
        run->lora_start = NULL;
    } else {
        lora_init(h.adapters, &run->lora, (uint64_t)run->cfg.seed);
    }
    run->be->upload_state(run->model);
}

// B and T: the parity batch's, or -b with -t (token shards) or E-1 (example shards).
static inline void train_batch_geometry(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    const GPT2Config* mc = run->mc;
    run->data_kind = DATA_TOKENS;
    if (run->parity) {
        parity_batch_read(&run->pb, cfg->parity_batch, mc->vocab_size, mc->max_seq_len);
        run->B = run->pb.B;
        run->T = run->pb.T;
    } else {
        run->B = cfg->batch_size;
        run->data_kind = data_kind_of(cfg->train_data, "-i", &run->example_len);
        if (run->data_kind == DATA_EXAMPLES) {
            int E = run->example_len;
            if (cfg->seq_len != 0 && cfg->seq_len != E - 1) {
                fatal("-t %d does not fit the example shards of -i %s: they hold E=%d tokens per example, "
                      "so T must be E-1 = %d (drop -t)", cfg->seq_len, cfg->train_data, E, E - 1);
            }
            run->T = E - 1;
            if (run->T > mc->max_seq_len) {
                fatal("the example shards of -i %s hold E=%d tokens per example, so T = E-1 = %d, longer than "
                      "the model's context maxT=%d (model %s): use a model with maxT >= %d",
                      cfg->train_data, E, run->T, mc->max_seq_len, run->model_path, run->T);
            }
        } else {
            run->T = cfg->seq_len > 0 ? cfg->seq_len : mc->max_seq_len;
            if (run->T > mc->max_seq_len) {
                fatal("-t %d is longer than the model's context maxT=%d (model %s): use -t %d or less "
                      "(-t 0 = the model's context)", run->T, mc->max_seq_len, run->model_path, mc->max_seq_len);
            }
        }
    }
    const TrainState* rs = &run->resume_state;
    if (run->resuming && (rs->B != run->B || rs->T != run->T)) {
        fatal("training state %s was written with -b %d -t %d; resume with the same batch geometry "
              "(got -b %d -t %d)", cfg->resume, rs->B, rs->T, run->B, run->T);
    }
    if (run->resuming && rs->seed != (uint64_t)cfg->seed) {
        fatal("training state %s was written with --seed %llu; resume with the same seed (got --seed %lld) "
              "so the data order continues", cfg->resume, (unsigned long long)rs->seed, cfg->seed);
    }
}

// --eval-sets "name=glob,name=glob": one data loader per set, of the training data's kind.
static inline void train_open_eval_sets(TrainRun* run) {
    const char* spec = run->cfg.eval_sets;
    while (*spec) {
        const char* end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        char item[1024];
        if (len == 0 || len >= sizeof(item)) {
            fatal("--eval-sets \"%s\": an empty or overlong entry; give \"name=glob,name=glob\"", run->cfg.eval_sets);
        }
        memcpy(item, spec, len);
        item[len] = '\0';
        char* eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1] || (size_t)(eq - item) >= sizeof(run->eval_names[0])) {
            fatal("--eval-sets entry \"%s\" is not name=glob (a name of 1 to 63 characters, then = and the "
                  "shards, e.g. train=data/train.bin)", item);
        }
        *eq = '\0';
        for (const char* c = item; *c; c++) {
            if (!(isalnum((unsigned char)*c) || *c == '_' || *c == '-')) {
                fatal("--eval-sets name \"%s\" may hold only letters, digits, _ and - (it becomes a log key)", item);
            }
        }
        if (run->num_eval_sets == MAX_EVAL_SETS) { fatal("--eval-sets takes at most %d sets", MAX_EVAL_SETS); }
        for (int i = 0; i < run->num_eval_sets; i++) {
            if (strcmp(run->eval_names[i], item) == 0) { fatal("--eval-sets names the set \"%s\" twice", item); }
        }
        int k = run->num_eval_sets;
        memcpy(run->eval_names[k], item, strlen(item) + 1);  // shorter than 64, checked above
        dataloader_init(&run->eval_loaders[k], eq + 1, "--eval-sets", run->B, run->T, run->mc->vocab_size, 0, 0);
        run->num_eval_sets++;
        if (run->eval_loaders[k].kind != run->train_loader.kind) {
            fatal("--eval-sets %s=%s holds another kind of shards than -i %s (token vs example); use one kind",
                  item, eq + 1, run->cfg.train_data);
        }
        spec = end ? end + 1 : spec + len;
    }
}

// The norm of each parameter tensor (double sums), and of all tensors but the LayerNorm gains.
static inline double train_param_norms(TrainRun* run, double* norms) {
    HostTensors h = run->be->host_tensors(run->model, 1);
    size_t sizes[NUM_PARAMETER_TENSORS];
    fill_param_sizes(sizes, run->mc);
    const float* p = h.params;
    double no_gains = 0.0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        double s = 0.0;
        for (size_t k = 0; k < sizes[i]; k++) { s += (double)p[k] * (double)p[k]; }
        norms[i] = sqrt(s);
        if (i != P_LN1W && i != P_LN2W && i != P_LNFW) { no_gains += s; }
        p += sizes[i];
    }
    return sqrt(no_gains);
}

// Data loaders, the number of steps, the output folder and the tokenizer.
static inline void train_open_data(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    const GPT2Config* mc = run->mc;
    const TrainState* rs = &run->resume_state;
    if (!run->parity) {
        dataloader_init(&run->train_loader, cfg->train_data, "-i", run->B, run->T, mc->vocab_size, 1,
                        (uint64_t)cfg->seed);
        run->have_train = 1;
        if (cfg->val_data[0] && cfg->val_every > 0) {
            dataloader_init(&run->val_loader, cfg->val_data, "-j", run->B, run->T, mc->vocab_size, 0, 0);
            run->have_val = 1;
            if (run->val_loader.kind != run->train_loader.kind) {
                fatal("-j %s and -i %s hold different kinds of shards (token vs example); use one kind",
                      cfg->val_data, cfg->train_data);
            }
        }
        train_open_eval_sets(run);
        if (run->resuming && (rs->data_batches_per_epoch != run->train_loader.batches_per_epoch ||
                              rs->data_num_shards != (int)run->train_loader.num_shards)) {
            fatal("the training data differs from the run being resumed: %d shards and %llu batches per "
                  "epoch then, %zu and %zu now; resume with the same -i, -b and -t",
                  rs->data_num_shards, (unsigned long long)rs->data_batches_per_epoch,
                  run->train_loader.num_shards, run->train_loader.batches_per_epoch);
        }
    }
    run->total_steps = cfg->steps;
    if (run->total_steps == -1 && run->resuming) { run->total_steps = rs->total_steps; }  // the run's planned end
    if (run->total_steps == -1) {
        if (run->parity) {
            run->total_steps = 1;
        } else {
            if (run->train_loader.batches_per_epoch > (size_t)INT32_MAX) {
                fatal("one epoch of -i %s has too many batches; pass --steps", cfg->train_data);
            }
            run->total_steps = (int)run->train_loader.batches_per_epoch;
        }
    }
    run->start_step = run->resuming ? rs->step : 0;
    run->out_dir = cfg->output_dir;
    if (run->resuming && !run->out_dir[0]) {
        run->resume_dir = path_dirname(cfg->resume);
        run->out_dir = run->resume_dir;
    }
    if (run->parity && !run->parity_grads && !run->out_dir[0]) {
        fatal("--parity-losses saves the final model: give an output folder with -o DIR");
    }
    run->sampling = !run->parity && cfg->sample_every > 0;
    if (run->sampling && cfg->tokenizer[0]) {
        if (path_exists(cfg->tokenizer)) {
            tokenizer_init(&run->tokenizer, cfg->tokenizer);
            tokenizer_check_model(&run->tokenizer, cfg->tokenizer, mc->vocab_size, run->model_path);
        } else {
            warn("tokenizer %s not found: samples print token ids (pass --tokenizer FILE)", cfg->tokenizer);
        }
    }
}

static inline void train_optimizer_settings(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    run->sched.kind = lr_schedule_kind(cfg->lr_schedule);
    run->sched.max_lr = cfg->lr;
    run->sched.warmup = cfg->warmup;
    run->sched.total_steps = run->total_steps;
    run->sched.min_lr_frac = cfg->min_lr_frac;
    run->opt.beta1 = cfg->beta1;
    run->opt.beta2 = cfg->beta2;
    run->opt.eps = cfg->eps;
    run->opt.weight_decay = cfg->weight_decay;
    run->opt.decay_matrices_only = strcmp(cfg->decay_params, "matrices") == 0;
    run->opt.decay_toward_init = cfg->decay_toward_init;
}

static inline void train_print_config(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    const GPT2Config* mc = run->mc;
    const char* rule = "+------------------------+----------------------------------------------------+\n";
    printf("%s", rule);
    print_row("setting", "value");
    printf("%s", rule);
    print_row("mode", "%s", run->parity_grads ? "parity: one forward/backward" : run->parity
              ? "parity: N steps on one batch" : run->resuming ? "train (resumed)" : "train");
    print_row("model", "%s", run->model_path);
    print_row("maxT / V / Vp", "%d / %d / %d", mc->max_seq_len, mc->vocab_size, mc->padded_vocab_size);
    print_row("L / NH / C / HS", "%d / %d / %d / %d", mc->num_layers, mc->num_heads, mc->channels,
              mc->channels / mc->num_heads);
    print_row("qkv bias", "%s", mc->no_qkv_bias ? "off (qkvb held at 0)" : "on");
    print_row("output head", "%s", mc->untied_head ? "untied (lm_head, tensor 17)" : "tied to wte");
    print_row("init", "%s (how the starting weights were drawn, header[9])", init_scheme_name(mc->init_scheme));
    print_row("parameters", "%zu", run->num_parameters);
    if (run->parity) {
        print_row("parity batch", "%s (B=%d T=%d, mask %s)", cfg->parity_batch, run->B, run->T,
                  run->pb.mask ? "yes" : "no");
    } else {
        print_row("train data (-i)", "%s", cfg->train_data);
        print_row("  kind", "%s, %zu shard(s), %zu batches/epoch", run->data_kind == DATA_EXAMPLES ?
                  "example shards" : "token shards", run->train_loader.num_shards, run->train_loader.batches_per_epoch);
        print_row("val data (-j)", "%s", run->have_val ? cfg->val_data : "(none)");
        if (run->have_val) {
            size_t n = run->val_loader.batches_per_epoch;
            print_row("  val batches (-m)", "%zu of %zu", cfg->val_batches > 0 && (size_t)cfg->val_batches < n
                      ? (size_t)cfg->val_batches : n, n);
            print_row("  val every (-v)", "%d", cfg->val_every);
        }
    }
    print_row("B x T (-b, -t)", "%d x %d = %d tokens/step", run->B, run->T, run->B * run->T);
    print_row("steps", "%d%s", run->total_steps, run->resuming ? " (total)" : "");
    if (run->resuming) { print_row("resume from", "%s (step %d)", cfg->resume, run->start_step); }
    if (run->sched.kind == LR_CONSTANT) {
        print_row("lr (-l)", "%g, constant after %d warmup steps", (double)cfg->lr, cfg->warmup);
    } else {
        print_row("lr (-l)", "%g, %s decay to %g after %d warmup steps", (double)cfg->lr, cfg->lr_schedule,
                  (double)(cfg->lr * cfg->min_lr_frac), cfg->warmup);
    }
    print_row("AdamW", "beta1 %g, beta2 %g, eps %g", (double)cfg->beta1, (double)cfg->beta2, (double)cfg->eps);
    print_row("weight decay", "%g on %s", (double)cfg->weight_decay, run->lora.rank > 0 ? "the LoRA adapters (all matrices)"
              : run->opt.decay_matrices_only ? "matrices (wte wpe qkvw attprojw fcw fcprojw, and lm_head when untied)"
              : "all tensors");
    print_row("  decay toward", "%s", cfg->decay_toward_init ? "the initial values (--decay-toward-init 1)" : "zero");
    if (cfg->grad_clip > 0) { print_row("grad clip", "%g (global norm)", (double)cfg->grad_clip); }
    else { print_row("grad clip", "off"); }
    char reg[REGULARIZER_DESC_LEN];
    print_row("dropout", "%s", describe_dropout(reg, sizeof(reg), cfg->dropout));
    print_row("weight noise", "%s", describe_weight_noise(reg, sizeof(reg), cfg->weight_noise));
    if (run->lora.rank > 0) {
        char targets[64];
        lora_describe_targets(targets, sizeof(targets), run->lora.target_mask);
        print_row("LoRA", "rank %d, alpha %g (scale %g), on %s", run->lora.rank, (double)run->lora.alpha,
                  (double)lora_scale(&run->lora), targets);
        print_row("  adapters from", "%s", run->lora_start_path ? run->lora_start_path : "new (A uniform, B = 0)");
        print_row("  trainable", "%zu of %zu parameters (%.3g%%)", run->lora.total, run->num_parameters + run->lora.total,
                  100.0 * (double)run->lora.total / (double)(run->num_parameters + run->lora.total));
        print_row("  grads + AdamW m, v", "%.3g MB (%.3g MB training every parameter)",
                  3.0 * 4.0 * (double)run->lora.total / 1e6, 3.0 * 4.0 * (double)run->num_parameters / 1e6);
    } else {
        print_row("trainable", "all %zu parameters", run->num_parameters);
    }
    if (run->sampling) {
        print_row("sample every (-s)", "%d, %d tokens, temp %g, top-k %d, top-p %g", cfg->sample_every,
                  cfg->gen_tokens, (double)cfg->temperature, cfg->top_k, (double)cfg->top_p);
        print_row("tokenizer", "%s", run->tokenizer.token_table ? cfg->tokenizer : "(none: token ids)");
    }
    print_row("seed", "%lld", cfg->seed);
    print_row("output (-o)", "%s", run->out_dir[0] ? run->out_dir : "(none: no log, no checkpoints)");
    if (run->out_dir[0] && cfg->save_every > 0) { print_row("save every", "%d steps and at the end", cfg->save_every); }
    else if (run->out_dir[0]) { print_row("save every", "at the end"); }
    run->be->print_rows(run->model);
    print_row("commit", "%s", GIT_COMMIT);
    printf("%s", rule);
}

// Parity mode 1: the forward/backward of training step 1, logits and gradients to --parity-out.
static inline void train_parity_grads(TrainRun* run) {
    const GPT2Config* mc = run->mc;
    // the forward/backward of training step 1, dropout and weight noise included
    LossSummary l = run->be->forward_backward(run->model, run->pb.inputs, run->pb.targets, run->pb.mask, run->B,
                                              run->T, 1, run->cfg.weight_noise);
    float loss = l.mean_loss;
    const float *logits = NULL, *grads = NULL;
    run->be->parity_outputs(run->model, &logits, &grads);
    parity_grads_write(run->cfg.parity_out, run->B, run->T, mc->padded_vocab_size, run->num_trained,
                       mc->num_layers, mc->channels, mc->untied_head, run->lora.rank, run->lora.target_mask, loss,
                       logits, grads);
    if (run->cfg.parity_attention[0]) {
        const float* att = run->be->attention_weights(run->model);  // non-NULL: train_parse_flags checked
        parity_attention_write(run->cfg.parity_attention, mc->num_layers, run->B, mc->num_heads, run->T, att);
        printf("parity: wrote the attention weights to %s\n", run->cfg.parity_attention);
    }
    if (run->lora.rank > 0) {
        printf("parity: loss %.9g, wrote logits and the adapters' gradients to %s\n", (double)loss, run->cfg.parity_out);
    } else {
        printf("parity: loss %.9g, wrote logits and the %d gradients to %s\n", (double)loss, mc->untied_head ? 17 : 16,
               run->cfg.parity_out);
    }
}

// The output folder (locked; stale temporary files removed) and the log's header record.
static inline void train_open_log(TrainRun* run) {
    if (!run->out_dir[0]) { return; }
    const GPT2Config* mc = run->mc;
    Json* j = &run->j;
    output_dir_claim(run->out_dir);
    logger_open(&run->logger, run->out_dir, run->resuming ? (long long)run->start_step : -1);
    char hw[400];
    run->be->hardware(run->model, hw, sizeof(hw));
    json_begin(j);
    if (run->resuming) {
        json_key_object(j, "resume");
        json_key_string(j, "state", run->cfg.resume);
        json_key_int(j, "from_step", run->start_step);
        json_end_object(j);
    }
    json_key_object(j, "config");
    train_config_json(j, run->specs, run->nspecs);
    json_key_string(j, "model_file", run->model_path);
    json_key_int(j, "max_seq_len", mc->max_seq_len);
    json_key_int(j, "vocab_size", mc->vocab_size);
    json_key_int(j, "padded_vocab_size", mc->padded_vocab_size);
    json_key_int(j, "n_layer", mc->num_layers);
    json_key_int(j, "n_head", mc->num_heads);
    json_key_int(j, "n_embd", mc->channels);
    json_key_bool(j, "qkv_bias", !mc->no_qkv_bias);
    json_key_string(j, "init", init_scheme_name(mc->init_scheme));
    json_key_bool(j, "untied_head", mc->untied_head);
    json_key_int(j, "num_parameters", (long long)run->num_parameters);
    json_key_int(j, "num_trained", (long long)run->num_trained);
    if (run->lora.rank > 0) {
        char targets[64];
        json_key_object(j, "lora");
        json_key_int(j, "rank", run->lora.rank);
        json_key_float(j, "alpha", run->lora.alpha);
        json_key_string(j, "targets", lora_describe_targets(targets, sizeof(targets), run->lora.target_mask));
        json_key_string(j, "adapters_from", run->lora_start_path ? run->lora_start_path : "new");
        json_end_object(j);
    }
    json_key_int(j, "B", run->B);
    json_key_int(j, "T", run->T);
    json_key_int(j, "total_steps", run->total_steps);
    json_key_string(j, "data_kind", run->parity ? "parity_batch" : run->data_kind == DATA_EXAMPLES ? "examples" : "tokens");
    run->be->log_config(run->model, j);
    json_end_object(j);
    json_key_string(j, "commit", GIT_COMMIT);
    json_key_string(j, "hardware", hw);
    json_key_string(j, "trainer", run->be->name);
    json_end(j);
    logger_write(&run->logger, j);
}

// A resumed run: optimizer state (checked finite), data position, sampler state, elapsed time.
static inline void train_restore_state(TrainRun* run) {
    rng_seed(&run->sample_rng, mix_seed((uint64_t)run->cfg.seed, 0x73616D706C65ULL));  // "sample"
    if (!run->resuming) { return; }
    TrainState* rs = &run->resume_state;
    HostTensors h = run->be->host_tensors(run->model, 0);
    train_state_load_body(run->cfg.resume, rs, h.m, h.v, h.init);
    run->be->upload_state(run->model);
    dataloader_seek(&run->train_loader, rs->data_epoch, (size_t)rs->data_cursor);
    run->sample_rng.state = rs->sampler_rng;
    run->elapsed_before = rs->elapsed_s;
    if (rs->total_steps != run->total_steps) {
        warn("the resumed run used --steps %d, this one %d: the learning-rate schedule changes",
             rs->total_steps, run->total_steps);
    }
}

// The step loop; returns the exit code (1 when training diverged).
static inline int train_loop(TrainRun* run) {
    const TrainConfig* cfg = &run->cfg;
    const TrainerBackend* be = run->be;
    const GPT2Config* mc = run->mc;
    Json* j = &run->j;
    int B = run->B, T = run->T, total = run->total_steps;
    Sampler sampler;
    memset(&sampler, 0, sizeof(sampler));
    int* sample_tokens = NULL;
    if (run->sampling) {
        sampler_init(&sampler, mc->vocab_size, cfg->temperature, cfg->top_k, cfg->top_p);
        sample_tokens = (int*)mallocCheck(((size_t)cfg->gen_tokens + 1) * sizeof(int));
    }
    int start_token = run->tokenizer.token_table ? run->tokenizer.eot_token : mc->vocab_size - 1;  // < V (checked)
    float* parity_losses = run->parity ? (float*)callocCheck((size_t)total, sizeof(float)) : NULL;
    int last_saved = run->resuming ? run->start_step : -1;
    if (run->start_step >= total) {
        printf("the state is already at step %d of %d: nothing to do (raise --steps to train longer)\n",
               run->start_step, total);
    }
    double t_start = now_seconds();
    int exit_code = 0;
    for (int step = run->start_step + 1; step <= total; step++) {
        const int *inputs, *targets, *mask;
        if (run->parity) {
            inputs = run->pb.inputs;
            targets = run->pb.targets;
            mask = run->pb.mask;
        } else {
            dataloader_next_batch(&run->train_loader);
            inputs = run->train_loader.inputs;
            targets = run->train_loader.targets;
            mask = run->train_loader.loss_mask;
        }
        double t0 = now_seconds();
        StepResult r;
        train_step(run, inputs, targets, mask, step, &r);
        double t1 = now_seconds();
        // the parameters' norm, when the update ran (a non-finite loss or gradient norm skips it)
        double param_norm = isfinite(r.loss) && isfinite(r.grad_norm) ? be->param_norm(run->model) : 0.0;
        if (training_diverged(&run->logger, j, step, r.loss, r.grad_norm, param_norm, r.lr, run->out_dir,
                              last_saved, run->model_path)) {
            exit_code = 1;
            break;
        }
        double step_s = t1 - t0;
        double tok_s = (double)B * T / step_s;
        int has_acc = mask != NULL && r.num_examples > 0;
        double train_acc = has_acc ? (double)r.num_correct / r.num_examples : NAN;
        if (run->parity) { parity_losses[step - run->start_step - 1] = r.loss; }
        printf("step %5d/%d | loss %.6f%s", step, total, (double)r.loss, has_acc ? " | acc " : "");
        if (has_acc) { printf("%.4f", train_acc); }
        printf(" | lr %.3e | norm %.4f%s | %.1f ms | %.0f tok/s\n", (double)r.lr, (double)r.grad_norm,
               r.grad_scale < 1.0f ? " (clipped)" : "", step_s * 1e3, tok_s);
        EvalResult ev;
        ev.loss = NAN;
        ev.acc = NAN;
        int evaluated = (run->have_val || run->num_eval_sets > 0) && cfg->val_every > 0 &&
                        (val_due(cfg, step) || step == total);
        EvalResult extra[MAX_EVAL_SETS];
        double norms[NUM_PARAMETER_TENSORS], norm_no_gains = 0.0;
        if (evaluated) {
            if (run->have_val) {
                ev = train_evaluate(run, &run->val_loader, cfg->val_batches);
                printf("val loss %.6f", ev.loss);
                if (!isnan(ev.acc)) { printf(" | val acc %.4f", ev.acc); }
                printf("\n");
            }
            for (int k = 0; k < run->num_eval_sets; k++) {
                extra[k] = train_evaluate(run, &run->eval_loaders[k], -1);
                printf("eval %s loss %.6f", run->eval_names[k], extra[k].loss);
                if (!isnan(extra[k].acc)) { printf(" | acc %.4f", extra[k].acc); }
                printf("\n");
            }
            norm_no_gains = train_param_norms(run, norms);
        }
        if (run->logger.fp) {
            json_begin(j);
            json_key_int(j, "step", step);
            json_key_float(j, "train_loss", r.loss);
            if (has_acc) { json_key_float(j, "train_acc", train_acc); } else { json_key_null(j, "train_acc"); }
            if (evaluated && run->have_val) {
                json_key_float(j, "val_loss", ev.loss);
                if (!isnan(ev.acc)) { json_key_float(j, "val_acc", ev.acc); } else { json_key_null(j, "val_acc"); }
            }
            if (evaluated && run->num_eval_sets > 0) {
                json_key_object(j, "eval");
                for (int k = 0; k < run->num_eval_sets; k++) {
                    json_key_object(j, run->eval_names[k]);
                    json_key_float(j, "loss", extra[k].loss);
                    if (!isnan(extra[k].acc)) { json_key_float(j, "acc", extra[k].acc); } else { json_key_null(j, "acc"); }
                    json_end_object(j);
                }
                json_end_object(j);
            }
            if (evaluated) {
                json_key_object(j, "param_norms");
                for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
                    if (i != P_LMHEAD || run->mc->untied_head) { json_key_float(j, PARAM_NAMES[i], norms[i]); }
                }
                json_end_object(j);
                json_key_float(j, "param_norm_without_ln_gains", norm_no_gains);
                if (run->lora.rank > 0) { json_key_float(j, "adapter_norm", param_norm); }
            }
            json_key_float(j, "lr", r.lr);
            json_key_float(j, "grad_norm", r.grad_norm);
            json_key_float(j, "param_norm", param_norm);
            json_key_float(j, "tokens_per_s", tok_s);
            json_key_float(j, "elapsed_s", run->elapsed_before + (now_seconds() - t_start));
            json_end(j);
            logger_write(&run->logger, j);
        }
        if (run->sampling && (step % cfg->sample_every == 0 || step == total)) {
            train_sample(run, &sampler, start_token, sample_tokens);
            char* text = tokenizer_decode_text(&run->tokenizer, sample_tokens + 1, cfg->gen_tokens);
            printf("sample (step %d):\n", step);
            fputs_utf8(text, stdout);  // the log's text: valid UTF-8, U+FFFD for invalid parts
            printf("\n---\n");
            if (run->logger.fp) {
                json_begin(j);
                json_key_int(j, "step", step);
                json_key_string(j, "sample", text);
                json_end(j);
                logger_write(&run->logger, j);
            }
            free(text);
        }
        if (run->out_dir[0] && ((cfg->save_every > 0 && step % cfg->save_every == 0) || step == total)) {
            TrainState st;
            memset(&st, 0, sizeof(st));
            st.step = step;
            st.total_steps = total;
            st.num_parameters = run->num_parameters;
            st.num_trained = run->num_trained;
            st.B = B;
            st.T = T;
            st.data_epoch = run->have_train ? run->train_loader.epoch : 0;
            st.data_cursor = run->have_train ? run->train_loader.cursor : 0;
            st.data_batches_per_epoch = run->have_train ? run->train_loader.batches_per_epoch : 0;
            st.data_num_shards = run->have_train ? (int)run->train_loader.num_shards : 0;
            st.seed = (uint64_t)cfg->seed;
            st.sampler_rng = run->sample_rng.state;
            st.elapsed_s = run->elapsed_before + (now_seconds() - t_start);
            train_save_checkpoint_pair(run, &st);
            last_saved = step;
        }
    }
    if (run->parity && exit_code == 0) {
        parity_losses_write(cfg->parity_losses, parity_losses, total - run->start_step);
        printf("parity: wrote %d losses to %s\n", total - run->start_step, cfg->parity_losses);
    }
    free(parity_losses);
    free(sample_tokens);
    if (run->sampling) { sampler_free(&sampler); }
    return exit_code;
}

// Everything freed, so the sanitizer builds' leak check stays quiet.
static inline void train_cleanup(TrainRun* run) {
    json_free(&run->j);
    logger_close(&run->logger);
    tokenizer_free(&run->tokenizer);
    if (run->have_train) { dataloader_free(&run->train_loader); }
    if (run->have_val) { dataloader_free(&run->val_loader); }
    for (int k = 0; k < run->num_eval_sets; k++) { dataloader_free(&run->eval_loaders[k]); }
    parity_batch_free(&run->pb);
    if (run->model) { run->be->destroy(run->model); }
    free(run->model_path);
    free(run->resume_dir);
    free(run->lora_start);
    free(run->lora_start_path);
}

// The whole run (see the top of this file); returns the process exit code.
static inline int train_main(int argc, char** argv, const TrainerBackend* backend) {
    TrainRun* run = (TrainRun*)callocCheck(1, sizeof(TrainRun));
    run->be = backend;
    train_parse_flags(run, argc, argv);
    train_resolve_model(run);
    train_setup_lora(run);
    train_batch_geometry(run);
    backend->prepare(run->model, &run->cfg, &run->lora, run->B, run->T, run->parity_grads, run->model_path);
    train_open_data(run);
    backend->allocate(run->model, &run->cfg, &run->lora, run->B, run->T, run->parity_grads);
    train_start_adapters(run);
    if (run->resuming) { check_resume_regularizers(&run->resume_state, &run->cfg); }
    train_optimizer_settings(run);
    train_print_config(run);
    int exit_code = 0;
    if (run->parity_grads) {
        train_parity_grads(run);
    } else {
        train_open_log(run);
        train_restore_state(run);
        exit_code = train_loop(run);
    }
    train_cleanup(run);
    free(run);
    return exit_code;
}

#endif  // LLMC_TRAIN_DRIVER_H
