/*
train_gpt2_fp32.cu: the fp32 CUDA trainer for GPT-2 (cuBLAS for the matmuls).

It takes the same flags, parity files, log, checkpoints and training-state files
as train_gpt2.c (the CPU reference): both run the training run of
llmc/train_driver.h and share llmc/ for everything that is not a layer, so a run
started on one trainer resumes on the other.
This file holds the GPU model and its TrainerBackend; the kernels are in
llmc/<layer>.cuh, one header per layer, each the shipped version of its workbench in
dev/cuda/ (which includes the same header, so the checks and benchmarks there
are of the code that trains), named in the header's comment.

Rules the code follows:
- Parameter gradients ACCUMULATE (+=); the step zeroes them first. Activation
  gradients live in three one-layer buffers reused by every layer (dresidual,
  dbuf (B,T,C), dbuf4 (B,T,4C)): matmul_backward WRITES dinp (=); layernorm_backward
  ADDS into dresidual, the gradient of the residual stream, so residual adds need
  no backward kernel; gelu_backward and attention_backward WRITE. The classifier
  is fused (classifier_chunks, as in the CPU trainer): chunk of positions by chunk,
  its logits, loss and dlogits (written over the logits) and its d(lnf) and d(wte),
  inside the forward pass, so no (B, T, Vp) buffer exists.
- Deterministic: no atomics; every reduction runs in a fixed order (two-stage
  sums through scratch buffers), and every launch configuration (grid, block,
  chunking of the sums) is a function of the shapes alone, never of the GPU.
  cuBLAS gives the same bits for the same call on GPUs of the same architecture
  and SM count with one toolkit version and one stream (its "Results
  reproducibility" rule), and the trainer uses one stream. What that adds up to:
  the same binary, flags (--tf32, --attention) and inputs on GPUs of the same
  model give the same bytes run after run, and a resumed run equals an
  uninterrupted one. Another GPU model (other SM count, or another attention
  kind picked by auto), another cuBLAS, or the CPU trainer rounds differently.
- Matmuls: cublasSgemm with TF32 tensor cores by default (--tf32 1); --tf32 0
  keeps them exact fp32 (the parity tests use it), and with it the attention.
- Attention: flash-style fused kernels that never store the T x T matrix, in two
  precisions (dev/cuda/attention_forward.cu and attention_backward.cu): version 3
  on TF32 tensor cores (WMMA; HS in {16, 32, 64}, sm_80+), the default with
  --tf32 1, and version 2 in fp32 on the SIMT cores (HS in {16, 32, 64, 128}),
  the default with --tf32 0. Where neither fits (or with --attention cublas),
  version 1: cuBLAS strided-batched products and softmax kernels, which
  recompute the attention matrix in the backward pass.
- Every CUDA and cuBLAS call and every launch is checked (file:line, exit 1);
  offsets are size_t; no GPU, or not enough GPU memory, is a clear error.
- No fast math (Makefile): expf, tanhf, division and sqrt are IEEE.

Shapes: B batch, T time, C channels, NH heads, HS = C/NH, L layers, V vocab,
Vp padded vocab, OC output channels of a matmul.
Usage: ./train_gpt2fp32cu --help; README sections "CUDA trainer" and the CPU
trainer's "Command line", "Parity mode", "Training state" document it.
*/
#include <float.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mma.h>

// the training run (llmc/train_driver.h) and through it every host header of llmc/: the model's
// config and tensors (gpt2_params.h), loss bookkeeping (loss.h), regularizers.h, utils.h, ...
#include "llmc/train_driver.h"
#include "llmc/activations.h"

// the layers' kernels (each header names the dev/cuda/ workbench versions it ships)
#include "llmc/cuda_common.cuh"
#include "llmc/adamw.cuh"
#include "llmc/attention.cuh"
#include "llmc/classifier.cuh"
#include "llmc/encoder.cuh"
#include "llmc/gelu.cuh"
#include "llmc/global_norm.cuh"
#include "llmc/layernorm.cuh"
#include "llmc/lora.cuh"
#include "llmc/matmul.cuh"
#include "llmc/regularizers.cuh"
#include "llmc/residual.cuh"

// ----------------------------------------------------------------------------
// the model

// Logits per chunk of the fused classifier (256 MB): d12 at B=16, T=1024 takes 13 chunks of 1,280
// positions instead of one (B, T, Vp) buffer of 3.3 GB (llmc/loss.h classifier_chunk_rows).
#define GPU_CLASSIFIER_FLOATS ((size_t)1 << 26)
#define NUM_ACTIVATION_TENSORS 19  // of llmc/activations.h's 22: all but att, attproj and fcproj
// Device memory of the activations, each tensor rounded up to 64 floats so every
// tensor starts 256-byte aligned (the float4 kernels need 16).
// The logits hold one chunk of the fused classifier: classifier_rows positions (or all of B*T if fewer).
static float* alloc_activations(ActivationTensors* a, const GPT2Config* cfg, int B, int T, int classifier_rows,
                                size_t* total_out) {
    size_t C = (size_t)cfg->channels, NH = (size_t)cfg->num_heads, L = (size_t)cfg->num_layers;
    size_t Vp = (size_t)cfg->padded_vocab_size, BT = (size_t)B * (size_t)T;
    size_t chunk = (size_t)classifier_rows < BT ? (size_t)classifier_rows : BT;
    size_t sizes[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * C, L * NH * BT, L * BT * C, L * BT * C,
        L * BT, L * BT, L * BT * 4 * C, L * BT * 4 * C, L * BT * C, BT * C, BT, BT, chunk * Vp, BT,
    };
    float** ptrs[NUM_ACTIVATION_TENSORS] = {
        &a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->atty, &a->att_lse, &a->residual2,
        &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch, &a->fch_gelu, &a->residual3, &a->lnf, &a->lnf_mean,
        &a->lnf_rstd, &a->logits, &a->losses,
    };
    size_t total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) total += (sizes[i] + 63) / 64 * 64;
    float* mem = (float*)gpuMalloc(total * sizeof(float), "the activations");
    float* p = mem;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) {
        *(ptrs[i]) = p;
        p += (sizes[i] + 63) / 64 * 64;
    }
    *total_out = total;
    return mem;
}

typedef struct {
    GPT2Config config;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    size_t num_parameters;      // P
    ParameterTensors params;    // device pointers into params_memory
    float* params_memory;       // (P) device
    float* params_host;         // (P) host: the checkpoint as loaded, and for saving
    ParameterTensors grads;
    float* grads_memory;        // (P) device
    float* m_memory;            // (P) device, AdamW first moment
    float* v_memory;            // (P) device, AdamW second moment
    int B, T;                   // the largest batch the buffers hold
    int classifier_rows;        // positions per chunk of the fused classifier
    ActivationTensors acts;
    float* acts_memory;
    size_t num_activations;
    // backward: one layer's activation gradients, reused by every layer
    float* dresidual;           // (B, T, C) gradient of the residual stream
    float* dbuf;                // (B, T, C)
    float* dbuf4;               // (B, T, 4*C), also dqkv (B, T, 3*C)
    float* mm_out;              // (B, T, C) attproj / fcproj output before the residual add
    float* col_scratch;         // (ceil(BT/256), 4*C) partial column sums
    double* norm_scratch;       // (NORM_MAX_BLOCKS + 1)
    AttentionState attn;
    // per-batch inputs and outputs
    int* d_inputs;              // (B, T)
    int* d_targets;             // (B, T)
    float* d_dloss;             // (B, T)
    int* d_argmax;              // (B, T)
    float* dloss;               // (B, T) host: weight of each position in the mean loss
    float* losses;              // (B, T) host
    int* argmax;                // (B, T) host
    EncoderBuckets buckets;
    float* saved_logits;        // (B, T, Vp) host, parity mode: logits before the softmax
    float* sample_logits;       // (Vp) host, the next-token logits while sampling
    float* m_host;              // (N) host staging for the training state
    float* v_host;              // (N)
    // LoRA (llmc/lora.h), as in train_gpt2.c: with lora.rank > 0 grads_memory is NULL, the
    // adapters train and m, v hold their Q floats
    LoraConfig lora;
    float* lora_memory;         // (Q) device
    float* lora_grads_memory;   // (Q) device
    float* lora_host;           // (Q) host
    LoraTensors lora_p, lora_g; // device pointers
    float* lora_u;              // (4, L, B*T, r) device
    float* lora_du;             // (B*T, r) device
    float* trained;             // params_memory or lora_memory
    float* trained_grads;       // grads_memory or lora_grads_memory
    size_t num_trained;         // N: P or Q
    // research regularizers (llmc/regularizers.h), as in train_gpt2.c
    RegularizerState reg;  // --seed, --dropout and the step of the current pass (llmc/regularizers.h)
    float* init_memory;         // (P) device: the parameters before step 1 (--decay-toward-init), else NULL
    float* init_host;           // (P) host copy of init_memory, for the training state
    float* clean_memory;        // (P) device: the clean parameters during a noisy step (--weight-noise), else NULL
    // results of the last forward with targets
    LossSummary loss;           // (llmc/loss.h)
} GPT2;

static void gpt2_build_from_checkpoint(GPT2* model, const char* path) {
    memset(model, 0, sizeof(*model));
    model->params_host = checkpoint_load(path, &model->config, &model->num_parameters);
    fill_param_sizes(model->param_sizes, &model->config);
    size_t bytes = model->num_parameters * sizeof(float);
    model->params_memory = (float*)gpuMalloc(bytes, "the parameters");
    cudaCheck(cudaMemcpy(model->params_memory, model->params_host, bytes, cudaMemcpyHostToDevice));
    point_parameters(&model->params, model->params_memory, model->param_sizes);
}

// Allocates gradients, optimizer state, activations and scratch for batches up to (B, T): of every
// parameter, or with LoRA of the adapters only (the parameters' gradient pointers stay NULL).
static void gpt2_allocate(GPT2* model, const LoraConfig* lora, int B, int T, int attention_kind, int keep_logits) {
    const GPT2Config* cfg = &model->config;
    size_t P = model->num_parameters, C = (size_t)cfg->channels, BT = (size_t)B * T;
    int NH = cfg->num_heads, HS = cfg->channels / cfg->num_heads;
    model->lora = *lora;
    if (lora->rank > 0) {
        size_t Q = lora->total;
        model->lora_memory = (float*)gpuMalloc(Q * sizeof(float), "the LoRA adapters");
        model->lora_grads_memory = (float*)gpuMalloc(Q * sizeof(float), "the LoRA gradients");
        model->lora_host = (float*)callocCheck(Q, sizeof(float));
        cudaCheck(cudaMemset(model->lora_memory, 0, Q * sizeof(float)));
        lora_point(&model->lora_p, model->lora_memory, lora);
        lora_point(&model->lora_g, model->lora_grads_memory, lora);
        model->lora_u = (float*)gpuMalloc((size_t)LORA_NUM_TARGETS * lora->L * BT * lora->rank * sizeof(float),
                                          "the LoRA activations");
        model->lora_du = (float*)gpuMalloc(BT * lora->rank * sizeof(float), "the LoRA scratch");
        memset(&model->grads, 0, sizeof(model->grads));
        model->trained = model->lora_memory;
        model->trained_grads = model->lora_grads_memory;
        model->num_trained = Q;
    } else {
        model->grads_memory = (float*)gpuMalloc(P * sizeof(float), "the gradients");
        point_parameters(&model->grads, model->grads_memory, model->param_sizes);
        model->trained = model->params_memory;
        model->trained_grads = model->grads_memory;
        model->num_trained = P;
    }
    size_t N = model->num_trained;
    model->m_memory = (float*)gpuMalloc(N * sizeof(float), "AdamW's first moment");
    model->v_memory = (float*)gpuMalloc(N * sizeof(float), "AdamW's second moment");
    cudaCheck(cudaMemset(model->m_memory, 0, N * sizeof(float)));
    cudaCheck(cudaMemset(model->v_memory, 0, N * sizeof(float)));
    model->B = B;
    model->T = T;
    model->acts_memory = alloc_activations(&model->acts, cfg, B, T, model->classifier_rows, &model->num_activations);
    model->dresidual = (float*)gpuMalloc(BT * C * sizeof(float), "the residual gradient");
    model->dbuf = (float*)gpuMalloc(BT * C * sizeof(float), "an activation gradient");
    model->dbuf4 = (float*)gpuMalloc(BT * 4 * C * sizeof(float), "the MLP activation gradient");
    model->mm_out = (float*)gpuMalloc(BT * C * sizeof(float), "a matmul output");
    model->col_scratch = (float*)gpuMalloc((size_t)ceil_div(BT, ROWS_PER_CHUNK) * 4 * C * sizeof(float),
                                           "the column-sum scratch");
    model->norm_scratch = (double*)gpuMalloc((NORM_MAX_BLOCKS + 1) * sizeof(double), "the norm scratch");
    attention_state_alloc(&model->attn, attention_kind, B, T, NH, HS);
    model->d_inputs = (int*)gpuMalloc(BT * sizeof(int), "the inputs");
    model->d_targets = (int*)gpuMalloc(BT * sizeof(int), "the targets");
    model->d_dloss = (float*)gpuMalloc(BT * sizeof(float), "the loss weights");
    model->d_argmax = (int*)gpuMalloc(BT * sizeof(int), "the predictions");
    model->dloss = (float*)mallocCheck(BT * sizeof(float));
    model->losses = (float*)mallocCheck(BT * sizeof(float));
    model->argmax = (int*)mallocCheck(BT * sizeof(int));
    EncoderBuckets* bk = &model->buckets;
    bk->token = (int*)mallocCheck(BT * sizeof(int));
    bk->start = (int*)mallocCheck((BT + 1) * sizeof(int));
    bk->pos = (int*)mallocCheck(BT * sizeof(int));
    bk->count = (int*)callocCheck((size_t)cfg->padded_vocab_size, sizeof(int));
    bk->d_token = (int*)gpuMalloc(BT * sizeof(int), "the encoder buckets");
    bk->d_start = (int*)gpuMalloc((BT + 1) * sizeof(int), "the encoder buckets");
    bk->d_pos = (int*)gpuMalloc(BT * sizeof(int), "the encoder buckets");
    model->saved_logits = keep_logits ? (float*)mallocCheck(BT * cfg->padded_vocab_size * sizeof(float)) : NULL;
    model->sample_logits = (float*)mallocCheck((size_t)cfg->padded_vocab_size * sizeof(float));
    model->m_host = (float*)callocCheck(N, sizeof(float));
    model->v_host = (float*)callocCheck(N, sizeof(float));
}

static void gpt2_free(GPT2* model) {
    float* dev[] = {model->params_memory, model->grads_memory, model->m_memory, model->v_memory, model->acts_memory,
                    model->dresidual, model->dbuf, model->dbuf4, model->mm_out, model->col_scratch, model->d_dloss,
                    model->init_memory, model->clean_memory, model->lora_memory, model->lora_grads_memory,
                    model->lora_u, model->lora_du};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
    int* idev[] = {model->d_inputs, model->d_targets, model->d_argmax, model->buckets.d_token,
                   model->buckets.d_start, model->buckets.d_pos};
    for (size_t i = 0; i < sizeof(idev) / sizeof(idev[0]); i++) cudaCheck(cudaFree(idev[i]));
    cudaCheck(cudaFree(model->norm_scratch));
    attention_state_free(&model->attn);
    void* host[] = {model->params_host, model->dloss, model->losses, model->argmax, model->buckets.token,
                    model->buckets.start, model->buckets.pos, model->buckets.count, model->saved_logits,
                    model->sample_logits, model->m_host, model->v_host, model->init_host, model->lora_host};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) free(host[i]);
    memset(model, 0, sizeof(*model));
}


// Target k's u buffer of layer l (llmc/lora.cuh lora_forward).
static float* lora_u_of(const GPT2* model, int k, int l) {
    return model->lora_u + ((size_t)k * model->lora.L + (size_t)l) * (size_t)model->B * model->T * model->lora.rank;
}

// Encoder, the L blocks and the final LayerNorm on model->d_inputs (B, T): fills acts up to lnf.
// With dropout (active_dropout) at the four sites of llmc/regularizers.h.
static void gpt2_forward_trunk(GPT2* model, int B, int T) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers, HS = C / NH;
    if (B > model->B || T > model->T) fatal("internal: batch (%d, %d) exceeds the allocated (%d, %d)", B, T, model->B, model->T);
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    size_t BT = (size_t)B * T, BTC = BT * C, c = (size_t)C;
    const float* qkvb = cfg->no_qkv_bias ? NULL : p.qkvb;
    const DropoutConfig* drop = regularizer_dropout(&model->reg);
    const LoraConfig* lc = &model->lora;
    float scale = lc->rank > 0 ? lora_scale(lc) : 0.0f;
    int r = lc->rank;
    LoraTensors lp = model->lora_p;
    encoder_forward(a.encoded, model->d_inputs, p.wte, p.wpe, B, T, C);
    if (drop) dropout_apply(a.encoded, a.encoded, BTC, regularizer_site_key(&model->reg, -1, DROPOUT_SITE_EMBED), drop);
    for (int l = 0; l < L; l++) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        LayerActivations la = layer_activations(&a, cfg, B, T, l);
        layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, p.ln1w + l * c, p.ln1b + l * c, (int)BT, C);
        matmul_forward(la.qkv, la.ln1, p.qkvw + l * 3 * c * c, qkvb ? qkvb + l * 3 * c : NULL, (int)BT, C, 3 * C);
        if (lora_targets(lc, LORA_QKVW)) {
            lora_forward(la.qkv, lora_u_of(model, LORA_QKVW, l), la.ln1, lp.A[LORA_QKVW] + l * r * c,
                         lp.B[LORA_QKVW] + l * 3 * c * r, scale, (int)BT, C, 3 * C, r);
        }
        attention_forward(la.atty, la.att_lse, la.qkv, &model->attn, drop, drop ? regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN) : 0,
                          B, T, NH, HS);
        // the projections' biases are added by the kernels after them (fused passes)
        matmul_forward(model->mm_out, la.atty, p.attprojw + l * c * c, NULL, (int)BT, C, C);
        if (lora_targets(lc, LORA_ATTPROJW)) {
            lora_forward(model->mm_out, lora_u_of(model, LORA_ATTPROJW, l), la.atty, lp.A[LORA_ATTPROJW] + l * r * c,
                         lp.B[LORA_ATTPROJW] + l * c * r, scale, (int)BT, C, C, r);
        }
        if (drop) {
            residual_bias_dropout_forward(la.residual2, residual, model->mm_out, p.attprojb + l * c, BTC, C,
                                          regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN_PROJ), drop);
        } else {
            residual_bias_forward(la.residual2, residual, model->mm_out, p.attprojb + l * c, BTC, C);
        }
        layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.residual2, p.ln2w + l * c, p.ln2b + l * c, (int)BT, C);
        matmul_forward(la.fch, la.ln2, p.fcw + l * 4 * c * c, NULL, (int)BT, C, 4 * C);
        if (lora_targets(lc, LORA_FCW)) {
            lora_forward(la.fch, lora_u_of(model, LORA_FCW, l), la.ln2, lp.A[LORA_FCW] + l * r * c,
                         lp.B[LORA_FCW] + l * 4 * c * r, scale, (int)BT, C, 4 * C, r);
        }
        bias_gelu_forward(la.fch_gelu, la.fch, p.fcb + l * 4 * c, BTC * 4, 4 * C);
        matmul_forward(model->mm_out, la.fch_gelu, p.fcprojw + l * 4 * c * c, NULL, (int)BT, 4 * C, C);
        if (lora_targets(lc, LORA_FCPROJW)) {
            lora_forward(model->mm_out, lora_u_of(model, LORA_FCPROJW, l), la.fch_gelu, lp.A[LORA_FCPROJW] + l * r * 4 * c,
                         lp.B[LORA_FCPROJW] + l * c * r, scale, (int)BT, 4 * C, C, r);
        }
        if (drop) {
            residual_bias_dropout_forward(la.residual3, la.residual2, model->mm_out, p.fcprojb + l * c, BTC, C,
                                          regularizer_site_key(&model->reg, l, DROPOUT_SITE_MLP), drop);
        } else {
            residual_bias_forward(la.residual3, la.residual2, model->mm_out, p.fcprojb + l * c, BTC, C);
        }
    }
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.residual3 + (size_t)(L - 1) * BTC, p.lnfw, p.lnfb, (int)BT, C);
}

// The fused classifier over the N positions of acts.lnf, chunk of classifier_rows positions after
// chunk (train_gpt2.c's classifier_chunks): the chunk's logits = lnf @ wte^T (copied to
// saved_logits in parity mode), with targets classifier_kernel2's loss and argmax and, with
// with_backward, the dlogits over the logits, then d(lnf) of the chunk's rows (into dbuf,
// written) and d(wte) += dlogits^T @ lnf of the chunk. No (B, T, Vp) buffer exists.
static void classifier_chunks(GPT2* model, int N, int with_targets, int with_backward) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    ActivationTensors a = model->acts;
    for (int n0 = 0; n0 < N; n0 += model->classifier_rows) {
        int n = N - n0 < model->classifier_rows ? N - n0 : model->classifier_rows;
        const float* lnf = a.lnf + (size_t)n0 * C;
        matmul_forward(a.logits, lnf, classifier_weight(&model->params, cfg->untied_head), NULL, n, C, Vp);
        if (model->saved_logits) {
            cudaCheck(cudaMemcpy(model->saved_logits + (size_t)n0 * Vp, a.logits, (size_t)n * Vp * sizeof(float),
                                 cudaMemcpyDeviceToHost));
        }
        if (!with_targets) continue;
        classifier_kernel2<<<n, 1024>>>(a.logits, a.losses + n0, model->d_argmax + n0, model->d_targets + n0,
                                        model->d_dloss + n0, V, Vp, with_backward);
        launchCheck();
        if (with_backward) {
            matmul_backward(model->dbuf + (size_t)n0 * C, classifier_weight(&model->grads, cfg->untied_head), NULL,
                            model->col_scratch, a.logits, lnf, classifier_weight(&model->params, cfg->untied_head), n,
                            C, Vp);
        }
    }
}

// Full forward on host inputs (B, T). With targets: the loss (mean over all positions, or over
// mask == 1 positions when mask != NULL), the example accuracy with a mask, and with_backward the
// classifier's gradients (d(lnf) in dbuf, d(wte) accumulated: zero the gradients first).
static void gpt2_forward(GPT2* model, const int* inputs, const int* targets, const int* mask, int B, int T,
                         int with_backward) {
    int N = B * T;
    // every host-to-device copy first: a copy from pageable memory waits for the GPU to drain
    cudaCheck(cudaMemcpy(model->d_inputs, inputs, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    size_t scored = 0;
    if (targets != NULL) {
        scored = loss_weights(model->dloss, mask, N);  // llmc/loss.h, as train_gpt2.c
        cudaCheck(cudaMemcpy(model->d_targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(model->d_dloss, model->dloss, (size_t)N * sizeof(float), cudaMemcpyHostToDevice));
    }
    gpt2_forward_trunk(model, B, T);
    classifier_chunks(model, N, targets != NULL, targets != NULL && with_backward);
    if (targets == NULL) return;
    cudaCheck(cudaMemcpy(model->losses, model->acts.losses, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(model->argmax, model->d_argmax, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost));
    model->loss = loss_summary(model->losses, model->argmax, targets, mask, B, T, scored);
}

static void gpt2_zero_grad(GPT2* model) {
    cudaCheck(cudaMemset(model->trained_grads, 0, model->num_trained * sizeof(float)));
}

// Gradients of the mean loss of the last gpt2_forward (with_backward, which did the classifier's
// part and left d(lnf) in dbuf) with respect to all parameters, accumulated into model->grads.
// The exact reverse of gpt2_forward_trunk; inputs are the host token ids of that forward.
static void gpt2_backward(GPT2* model, const int* inputs, int B, int T) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers, HS = C / NH; int Vp = cfg->padded_vocab_size;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    size_t BT = (size_t)B * T, BTC = BT * C, c = (size_t)C;
    float* dqkvb = cfg->no_qkv_bias ? NULL : g.qkvb;  // NULL also with LoRA (every g.* is NULL then)
    const DropoutConfig* drop = regularizer_dropout(&model->reg);
    const LoraConfig* lc = &model->lora;
    float scale = lc->rank > 0 ? lora_scale(lc) : 0.0f;
    int r = lc->rank;
    LoraTensors lp = model->lora_p, lg = model->lora_g;
    float* dres = model->dresidual;
    float* scr = model->col_scratch;
    cudaCheck(cudaMemset(dres, 0, BTC * sizeof(float)));
    layernorm_backward(dres, g.lnfw, g.lnfb, scr, model->dbuf, a.residual3 + (size_t)(L - 1) * BTC, p.lnfw,
                       a.lnf_mean, a.lnf_rstd, (int)BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        // dres holds d(residual3): it is also d(fcproj out) (times the dropout factors, into
        // mm_out, with dropout), and the start of d(residual2)
        const float* dproj = dres;
        if (drop) {
            dropout_apply(model->mm_out, dres, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_MLP), drop);
            dproj = model->mm_out;
        }
        matmul_backward(model->dbuf4, g.fcprojw ? g.fcprojw + l * 4 * c * c : NULL, g.fcprojb ? g.fcprojb + l * c : NULL,
                        scr, dproj, a.fch_gelu + l * BTC * 4, p.fcprojw + l * 4 * c * c, (int)BT, 4 * C, C);
        if (lora_targets(lc, LORA_FCPROJW)) {
            lora_backward(model->dbuf4, lg.A[LORA_FCPROJW] + l * r * 4 * c, lg.B[LORA_FCPROJW] + l * c * r, model->lora_du,
                          dproj, a.fch_gelu + l * BTC * 4, lora_u_of(model, LORA_FCPROJW, l),
                          lp.A[LORA_FCPROJW] + l * r * 4 * c, lp.B[LORA_FCPROJW] + l * c * r, scale, (int)BT, 4 * C, C, r);
        }
        gelu_backward(model->dbuf4, a.fch + l * BTC * 4, model->dbuf4, BTC * 4);
        matmul_backward(model->dbuf, g.fcw ? g.fcw + l * 4 * c * c : NULL, g.fcb ? g.fcb + l * 4 * c : NULL, scr,
                        model->dbuf4, a.ln2 + l * BTC, p.fcw + l * 4 * c * c, (int)BT, C, 4 * C);
        if (lora_targets(lc, LORA_FCW)) {
            lora_backward(model->dbuf, lg.A[LORA_FCW] + l * r * c, lg.B[LORA_FCW] + l * 4 * c * r, model->lora_du,
                          model->dbuf4, a.ln2 + l * BTC, lora_u_of(model, LORA_FCW, l), lp.A[LORA_FCW] + l * r * c,
                          lp.B[LORA_FCW] + l * 4 * c * r, scale, (int)BT, C, 4 * C, r);
        }
        layernorm_backward(dres, g.ln2w ? g.ln2w + l * c : NULL, g.ln2b ? g.ln2b + l * c : NULL, scr, model->dbuf, a.residual2 + l * BTC,
                           p.ln2w + l * c, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, (int)BT, C);
        // dres holds d(residual2): also d(attproj out) (with dropout: times its factors), and
        // the start of d(residual)
        dproj = dres;
        if (drop) {
            dropout_apply(model->mm_out, dres, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN_PROJ), drop);
            dproj = model->mm_out;
        }
        matmul_backward(model->dbuf, g.attprojw ? g.attprojw + l * c * c : NULL, g.attprojb ? g.attprojb + l * c : NULL,
                        scr, dproj, a.atty + l * BTC, p.attprojw + l * c * c, (int)BT, C, C);
        if (lora_targets(lc, LORA_ATTPROJW)) {
            lora_backward(model->dbuf, lg.A[LORA_ATTPROJW] + l * r * c, lg.B[LORA_ATTPROJW] + l * c * r, model->lora_du,
                          dproj, a.atty + l * BTC, lora_u_of(model, LORA_ATTPROJW, l), lp.A[LORA_ATTPROJW] + l * r * c,
                          lp.B[LORA_ATTPROJW] + l * c * r, scale, (int)BT, C, C, r);
        }
        attention_backward(model->dbuf4, model->dbuf, a.qkv + l * BTC * 3, a.atty + l * BTC, a.att_lse + l * BT * NH,
                           &model->attn, drop, drop ? regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN) : 0, B, T, NH, HS);
        matmul_backward(model->dbuf, g.qkvw ? g.qkvw + l * 3 * c * c : NULL, dqkvb ? dqkvb + l * 3 * c : NULL, scr,
                        model->dbuf4, a.ln1 + l * BTC, p.qkvw + l * 3 * c * c, (int)BT, C, 3 * C);
        if (lora_targets(lc, LORA_QKVW)) {
            lora_backward(model->dbuf, lg.A[LORA_QKVW] + l * r * c, lg.B[LORA_QKVW] + l * 3 * c * r, model->lora_du,
                          model->dbuf4, a.ln1 + l * BTC, lora_u_of(model, LORA_QKVW, l), lp.A[LORA_QKVW] + l * r * c,
                          lp.B[LORA_QKVW] + l * 3 * c * r, scale, (int)BT, C, 3 * C, r);
        }
        layernorm_backward(dres, g.ln1w ? g.ln1w + l * c : NULL, g.ln1b ? g.ln1b + l * c : NULL, scr, model->dbuf, residual, p.ln1w + l * c,
                           a.ln1_mean + l * BT, a.ln1_rstd + l * BT, (int)BT, C);
    }
    if (g.wte == NULL) return;  // LoRA: the embeddings are frozen
    if (drop) dropout_apply(dres, dres, BTC, regularizer_site_key(&model->reg, -1, DROPOUT_SITE_EMBED), drop);
    encoder_backward(g.wte, g.wpe, dres, inputs, &model->buckets, B, T, C, Vp);
}

// One AdamW step t (1-based), the arithmetic of train_gpt2.c's gpt2_adamw_update
// (see there, decay toward the initialization included); one launch per tensor
// for its weight decay; qkvb is skipped when the model has no QKV bias.
static void gpt2_adamw_update(GPT2* model, const AdamWSettings* s, float lr, float grad_scale, int t) {
    AdamWScalars a = adamw_step_scalars(s, lr, t);
    float step_size = a.step_size, b2s = a.bias2_sqrt;
    size_t offset = 0;
    const int block = 512;
    if (model->lora.rank > 0) {  // the adapters only: every one a matrix, all decay (train_gpt2.c)
        float decay, lr_wd;
        adamw_adapter_decay(s, lr, &decay, &lr_wd);
        size_t n = model->lora.total;
        adamw_kernel1<<<ceil_div(n, block), block>>>(model->lora_memory, model->m_memory, model->v_memory,
                                                    model->lora_grads_memory, NULL, n, s->beta1, s->beta2, s->eps,
                                                    decay, lr_wd, step_size, b2s, grad_scale);
        launchCheck();
        return;
    }
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        float decay, lr_wd;
        // skipped: an empty tensor (a tied model's lm_head; a launch needs a non-empty grid) and
        // a tensor that is not trained
        if (n == 0 || !adamw_tensor_decay(s, &model->config, i, lr, &decay, &lr_wd)) { offset += n; continue; }
        const float* init = s->decay_toward_init ? model->init_memory + offset : NULL;
        adamw_kernel1<<<ceil_div(n, block), block>>>(model->params_memory + offset, model->m_memory + offset,
                                                    model->v_memory + offset, model->grads_memory + offset, init, n,
                                                    s->beta1, s->beta2, s->eps, decay, lr_wd, step_size, b2s,
                                                    grad_scale);
        launchCheck();
        offset += n;
    }
}

// Weight noise of training step `step` over the spans of llmc/regularizers.h (not wte's padded
// rows, not a disabled qkvb): the numbers of train_gpt2.c's add_weight_noise.
static void add_weight_noise(GPT2* model, float sigma, int step) {
    uint64_t key = noise_key(model->reg.seed, step);
    size_t offset = 0;
    const int block = 256;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = weight_noise_span(&model->config, i, model->param_sizes[i]);
        if (n > 0) {
            weight_noise_kernel<<<ceil_div(n, block), block>>>(model->params_memory + offset, offset, n, key, sigma);
            launchCheck();
        }
        offset += model->param_sizes[i];
    }
}

// Forward and backward of training step `step` (train_gpt2.c's gpt2_forward_backward_step): with
// the step's dropout masks when --dropout > 0, at noisy weights when weight_noise > 0 (the clean
// parameters wait in clean_memory and come back after the backward pass).
static void gpt2_forward_backward_step(GPT2* model, const int* inputs, const int* targets, const int* mask,
                                       int B, int T, int step, float weight_noise) {
    size_t bytes = model->num_parameters * sizeof(float);
    if (weight_noise > 0.0f) {
        cudaCheck(cudaMemcpy(model->clean_memory, model->params_memory, bytes, cudaMemcpyDeviceToDevice));
        add_weight_noise(model, weight_noise, step);
    }
    model->reg.step = step;
    gpt2_zero_grad(model);
    gpt2_forward(model, inputs, targets, mask, B, T, 1);
    gpt2_backward(model, inputs, B, T);
    model->reg.step = 0;
    if (weight_noise > 0.0f) {
        cudaCheck(cudaMemcpy(model->params_memory, model->clean_memory, bytes, cudaMemcpyDeviceToDevice));
    }
}

// ----------------------------------------------------------------------------
// sampling

// Logits (Vp, host) of the position after tokens[0..n-1], using at most the last
// model->T tokens (a sliding window when the sample grows longer).
static const float* gpt2_next_token_logits(GPT2* model, const int* tokens, int n) {
    int start = n > model->T ? n - model->T : 0;
    int len = n - start;
    cudaCheck(cudaMemcpy(model->d_inputs, tokens + start, (size_t)len * sizeof(int), cudaMemcpyHostToDevice));
    gpt2_forward_trunk(model, 1, len);
    int C = model->config.channels, Vp = model->config.padded_vocab_size;
    matmul_forward(model->acts.logits, model->acts.lnf + (size_t)(len - 1) * C,
                   classifier_weight(&model->params, model->config.untied_head), NULL, 1, C, Vp);
    cudaCheck(cudaMemcpy(model->sample_logits, model->acts.logits, (size_t)Vp * sizeof(float), cudaMemcpyDeviceToHost));
    return model->sample_logits;
}

// ----------------------------------------------------------------------------
// main

static const char* const ATTENTION_CHOICES[] = {"auto", "fused-tf32", "fused", "cublas", NULL};

// ---- the backend of llmc/train_driver.h: this file's model behind the shared training run

static int g_tf32 = 1;                         // --tf32
static const char* g_attention_choice = "auto";  // --attention
static cudaDeviceProp g_prop;                  // the GPU (require_gpu)

static const ArgSpec CUDA_SPECS[] = {
    {0, "tf32", ARG_INT, &g_tf32, "CUDA: TF32 tensor cores for the matmuls (1), or exact fp32 (0)", NULL},
    {0, "attention", ARG_CHOICE, &g_attention_choice,
     "CUDA: attention kernels: fused-tf32 (flash-style on TF32 tensor cores), fused (the same in fp32), cublas "
     "(batched SGEMMs), or auto (fused-tf32 with --tf32 1, fused with --tf32 0, where the head size allows)",
     ATTENTION_CHOICES},
};

typedef struct {
    GPT2 gpt2;
    int attention_kind;     // ATTENTION_FUSED_TF32, ATTENTION_FUSED or ATTENTION_CUBLAS
    int attention_dropout;  // --dropout > 0 took the cuBLAS attention
    float* grads_host;      // (P) parity mode: the gradients on the host
} CudaModel;

static void cuda_configure(const TrainConfig* cfg) {
    (void)cfg;
    if (g_tf32 != 0 && g_tf32 != 1) fatal("--tf32 must be 0 or 1, got %d", g_tf32);
    require_gpu(&g_prop, "train_gpt2fp32cu needs an NVIDIA GPU with a working driver; on this machine use the "
                         "CPU trainer ./train_gpt2 (same flags).");
}

static void* cuda_load(const char* path, const GPT2Config** config, size_t* num_parameters, const float** params) {
    CudaModel* cm = (CudaModel*)callocCheck(1, sizeof(CudaModel));
    gpt2_build_from_checkpoint(&cm->gpt2, path);
    *config = &cm->gpt2.config;
    *num_parameters = cm->gpt2.num_parameters;
    *params = cm->gpt2.params_host;
    return cm;
}

// Attention kernels: auto = the tensor-core kernels with --tf32 1, the fp32 fused kernels with
// --tf32 0, each when the head size and shared memory allow, else cuBLAS. Dropout on the
// attention weights exists in the cuBLAS version only (the fused kernels never form the weights
// that would be dropped), so --dropout > 0 takes it. GPU memory is checked by each allocation.
static void cuda_prepare(void* m, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits,
                         const char* model_path) {
    (void)lora, (void)B, (void)T, (void)keep_logits, (void)model_path;
    CudaModel* cm = (CudaModel*)m;
    const GPT2Config* mc = &cm->gpt2.config;
    cm->gpt2.classifier_rows = classifier_chunk_rows(cfg->classifier_rows, mc->padded_vocab_size, GPU_CLASSIFIER_FLOATS);
    const cudaDeviceProp* prop = &g_prop;
    const char* choice = g_attention_choice;
    int HS = mc->channels / mc->num_heads;
    size_t fused_smem = attention_fused_smem_bytes(HS), tc_smem = attention_tc_smem_bytes(HS);
    int fused_ok = attention_kind_supported(ATTENTION_FUSED, HS, prop);
    int tc_ok = attention_kind_supported(ATTENTION_FUSED_TF32, HS, prop);
    cm->attention_kind = ATTENTION_CUBLAS;
    cm->attention_dropout = cfg->dropout > 0.0f;
    if (cm->attention_dropout && strcmp(choice, "auto") != 0 && strcmp(choice, "cublas") != 0) {
        fatal("--attention %s has no attention dropout; with --dropout %g use --attention cublas or auto "
              "(auto takes cublas when dropout is on)", choice, (double)cfg->dropout);
    }
    if (cm->attention_dropout) {
        cm->attention_kind = ATTENTION_CUBLAS;
    } else if (strcmp(choice, "fused") == 0) {
        if (!fused_ok) {
            fatal("--attention fused: the fused kernels support head sizes 16, 32, 64, 128 within the GPU's %zu "
                  "bytes of shared memory per block; this model has HS=%d%s. Use --attention cublas or auto",
                  (size_t)prop->sharedMemPerBlockOptin, HS, fused_smem ? " (too much shared memory)" : "");
        }
        cm->attention_kind = ATTENTION_FUSED;
    } else if (strcmp(choice, "fused-tf32") == 0) {
        if (!tc_ok) {
            fatal("--attention fused-tf32: the tensor-core kernels need an sm_80 or newer GPU (this one is sm_%d%d), "
                  "head size 16, 32 or 64 (this model has HS=%d) and %zu bytes of shared memory per block (the GPU "
                  "allows %zu). Use --attention fused, cublas or auto", prop->major, prop->minor, HS, tc_smem,
                  (size_t)prop->sharedMemPerBlockOptin);
        }
        cm->attention_kind = ATTENTION_FUSED_TF32;
    } else if (strcmp(choice, "auto") == 0) {
        cm->attention_kind = (g_tf32 && tc_ok) ? ATTENTION_FUSED_TF32 : fused_ok ? ATTENTION_FUSED : ATTENTION_CUBLAS;
    }
}

static void cuda_allocate(void* m, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits) {
    CudaModel* cm = (CudaModel*)m;
    GPT2* model = &cm->gpt2;
    cublasCheck(cublasCreate(&g_cublas));
    cublasCheck(cublasSetMathMode(g_cublas, g_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    gpt2_allocate(model, lora, B, T, cm->attention_kind, keep_logits);
    model->reg.seed = (uint64_t)cfg->seed;
    model->reg.dropout = dropout_config(cfg->dropout);
    size_t bytes = model->num_parameters * sizeof(float);
    if (cfg->weight_noise > 0.0f) model->clean_memory = (float*)gpuMalloc(bytes, "the clean parameters (--weight-noise)");
    if (cfg->decay_toward_init) {
        // the parameters before step 1; a resumed run reads them from its state file
        model->init_memory = (float*)gpuMalloc(bytes, "the initial parameters (--decay-toward-init)");
        model->init_host = (float*)mallocCheck(bytes);
        memcpy(model->init_host, model->params_host, bytes);
        cudaCheck(cudaMemcpy(model->init_memory, model->init_host, bytes, cudaMemcpyHostToDevice));
    }
    if (keep_logits) cm->grads_host = (float*)mallocCheck(model->num_trained * sizeof(float));
}

static const char* cuda_attention_name(const CudaModel* cm) {
    return cm->attention_kind == ATTENTION_FUSED_TF32 ? "fused-tf32" : cm->attention_kind == ATTENTION_FUSED ? "fused"
                                                                                                             : "cublas";
}

static void cuda_print_rows(void* m) {
    CudaModel* cm = (CudaModel*)m;
    size_t gpu_free = 0, gpu_total = 0;
    cudaCheck(cudaMemGetInfo(&gpu_free, &gpu_total));
    print_row("GPU", "%s", g_prop.name);
    print_row("  memory", "%.1f GiB used of %.1f GiB", (gpu_total - gpu_free) / 1073741824.0, gpu_total / 1073741824.0);
    print_row("matmuls", "cuBLAS, %s", g_tf32 ? "TF32 tensor cores (--tf32 1)" : "exact fp32 (--tf32 0)");
    print_row("attention", "%s", cm->attention_kind == ATTENTION_FUSED_TF32 ? "fused-tf32 (flash-style, TF32 tensor cores)"
                                 : cm->attention_kind == ATTENTION_FUSED ? "fused (flash-style, fp32 SIMT)"
                                 : cm->attention_dropout ? "cublas (strided-batched + softmax kernels; --dropout needs it)"
                                                         : "cublas (strided-batched + softmax kernels)");
}

static void cuda_log_config(void* m, Json* j) {
    json_key_string(j, "blas", g_tf32 ? "cuBLAS (TF32)" : "cuBLAS (fp32)");
    json_key_string(j, "attention_kernels", cuda_attention_name((CudaModel*)m));
}

static void cuda_hardware(void* m, char* buf, size_t n) {
    (void)m;
    int driver = 0, runtime = 0;
    cudaCheck(cudaDriverGetVersion(&driver));
    cudaCheck(cudaRuntimeGetVersion(&runtime));
    snprintf(buf, n, "%s (sm_%d%d, %d SMs, %.1f GiB), driver %d.%d, runtime %d.%d", g_prop.name, g_prop.major,
             g_prop.minor, g_prop.multiProcessorCount, g_prop.totalGlobalMem / 1073741824.0, driver / 1000,
             (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
}

static LossSummary cuda_forward(void* m, const int* inputs, const int* targets, const int* mask, int B, int T) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    gpt2_forward(model, inputs, targets, mask, B, T, 0);
    return model->loss;
}

static LossSummary cuda_forward_backward(void* m, const int* inputs, const int* targets, const int* mask, int B,
                                        int T, int step, float weight_noise) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    gpt2_forward_backward_step(model, inputs, targets, mask, B, T, step, weight_noise);
    return model->loss;
}

static double cuda_grad_norm(void* m) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    return vector_norm(model->trained_grads, model->num_trained, model->norm_scratch);
}

static void cuda_update(void* m, const AdamWSettings* opt, float lr, float grad_scale, int t) {
    gpt2_adamw_update(&((CudaModel*)m)->gpt2, opt, lr, grad_scale, t);
    cudaCheck(cudaDeviceSynchronize());  // the step's time includes the update
}

static double cuda_param_norm(void* m) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    return vector_norm(model->trained, model->num_trained, model->norm_scratch);
}

static const float* cuda_next_token_logits(void* m, const int* tokens, int n) {
    return gpt2_next_token_logits(&((CudaModel*)m)->gpt2, tokens, n);
}

static void cuda_parity_outputs(void* m, const float** logits, const float** grads) {
    CudaModel* cm = (CudaModel*)m;
    GPT2* model = &cm->gpt2;
    cudaCheck(cudaMemcpy(cm->grads_host, model->trained_grads, model->num_trained * sizeof(float),
                         cudaMemcpyDeviceToHost));
    *logits = model->saved_logits;
    *grads = cm->grads_host;
}

// The host mirrors; with download, the parameters and AdamW moments are copied from the GPU first
// (the initial parameters never change on the GPU: init_host stays their copy).
static HostTensors cuda_host_tensors(void* m, int download) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    if (download) {
        size_t bytes = model->num_trained * sizeof(float);
        if (model->lora.rank > 0) {  // the frozen parameters never change: params_host stays their copy
            cudaCheck(cudaMemcpy(model->lora_host, model->lora_memory, bytes, cudaMemcpyDeviceToHost));
        } else {
            cudaCheck(cudaMemcpy(model->params_host, model->params_memory, bytes, cudaMemcpyDeviceToHost));
        }
        cudaCheck(cudaMemcpy(model->m_host, model->m_memory, bytes, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(model->v_host, model->v_memory, bytes, cudaMemcpyDeviceToHost));
    }
    HostTensors h = {model->params_host, model->m_host, model->v_host, model->init_host, model->lora_host};
    return h;
}

static void cuda_upload_state(void* m) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    size_t bytes = model->num_trained * sizeof(float);
    cudaCheck(cudaMemcpy(model->m_memory, model->m_host, bytes, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(model->v_memory, model->v_host, bytes, cudaMemcpyHostToDevice));
    if (model->init_memory) cudaCheck(cudaMemcpy(model->init_memory, model->init_host, bytes, cudaMemcpyHostToDevice));
    if (model->lora_memory) cudaCheck(cudaMemcpy(model->lora_memory, model->lora_host, bytes, cudaMemcpyHostToDevice));
}

static void cuda_destroy(void* m) {
    CudaModel* cm = (CudaModel*)m;
    int allocated = cm->gpt2.m_memory != NULL;
    gpt2_free(&cm->gpt2);
    if (allocated) cublasCheck(cublasDestroy(g_cublas));
    free(cm->grads_host);
    free(cm);
}

int main(int argc, char** argv) {
    static const TrainerBackend cuda = {
        "train_gpt2fp32cu", " --tf32 0", CUDA_SPECS, (int)(sizeof(CUDA_SPECS) / sizeof(CUDA_SPECS[0])),
        cuda_configure, cuda_load, cuda_prepare, cuda_allocate, cuda_print_rows, cuda_log_config, cuda_hardware,
        cuda_forward, cuda_forward_backward, cuda_grad_norm, cuda_update, cuda_param_norm, cuda_next_token_logits,
        cuda_parity_outputs, NULL, cuda_host_tensors, cuda_upload_state, cuda_destroy,
    };
    return train_main(argc, argv, &cuda);
}

