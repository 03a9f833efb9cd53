/*
train_gpt2.c: the CPU reference trainer for GPT-2 (fp32, C with OpenMP).

This file holds the layers (forward and, right below each, its backward), the
model, AdamW, and the TrainerBackend that plugs this model into the training run
of llmc/train_driver.h (main is one call). Everything shared with the CUDA
trainer (the run itself, config, checkpoint, data, tokenizer, RNG, schedule,
sampler, flags, log, training state, parity files, loss bookkeeping, the
activation layout) lives in llmc/.

Rules the code follows:
- Every `_backward` ACCUMULATES into its gradient outputs with `+=`; the caller
  zeroes them (gpt2_zero_grad) before the forward pass, because the classifier
  is fused: classifier_chunks computes the logits, softmax, loss and the
  classifier's gradients (dlnf, dwte) chunk of positions by chunk, so no
  (B, T, Vp) logits buffer exists (gpt2_forward with_backward).
- gpt2_backward is gpt2_forward read backwards, layer by layer.
- Results depend neither on timing nor on the thread count: every parallel
  loop writes disjoint outputs, every reduction runs in a fixed order, and the
  work is split into pieces whose boundaries are fixed by the shapes alone
  (sgemm_tiled), so runs with the same seed and binary are bit-identical with
  any number of threads and any OpenBLAS kernel.
- Matmuls go through cblas_sgemm when built with USE_BLAS (the Makefile finds
  OpenBLAS); `make train_gpt2 USE_BLAS=0` uses the plain loops kept below as
  the readable reference. With BLAS, OpenBLAS runs single-threaded inside the
  OpenMP threads (each call multiplies one fixed tile of rows, see
  sgemm_tiled), so there is one thread pool and no oversubscription.
- No fast-math: the Makefile compiles with -O3 and without -ffast-math, which
  breaks gelu_backward (llm.c got NaN there) and our NaN-loss check (isfinite
  is assumed true under -ffinite-math-only).

Shapes: B batch, T time, C channels, NH heads, HS = C/NH, L layers, V vocab,
Vp padded vocab, OC output channels of a matmul.
Usage: ./train_gpt2 --help; the README sections "CPU trainer", "Command line",
"Parity mode" and "Training state" document the flags and files.
*/
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef USE_BLAS
#include <cblas.h>
#ifdef BLAS_SCIPY_PREFIX
// the PyPI wheel scipy-openblas32 prefixes every symbol with scipy_
#define cblas_sgemm scipy_cblas_sgemm
#define openblas_set_num_threads scipy_openblas_set_num_threads
#define openblas_get_config scipy_openblas_get_config
#define openblas_get_corename scipy_openblas_get_corename
#endif
#endif

// the training run (llmc/train_driver.h) and through it every host header of llmc/: the model's
// config and tensors (gpt2_params.h), loss bookkeeping (loss.h), regularizers.h, utils.h, ...
#include "llmc/train_driver.h"
#include "llmc/activations.h"

// Parallel regions with less work than this (in elements; matmuls and attention in
// multiply-adds / 64) run on one thread: forking costs microseconds, and on a busy
// machine a thread waiting at the region's barrier can lose a whole scheduler time
// slice. Results never depend on it: every parallel loop writes disjoint outputs,
// and the output of a run is bit-identical for any thread count.
#define PAR_MIN_WORK ((size_t)1 << 15)
// Column sums over rows (bias and LayerNorm weight gradients) give each thread blocks of this many
// columns; every column still sums its rows in row order.
#define COLUMN_BLOCK 16

static int num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// ----------------------------------------------------------------------------
// layers

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
static void encoder_forward(float* out,                          // (B, T, C)
                            const int* inp,                      // (B, T)
                            const float* wte, const float* wpe,  // (Vp, C), (maxT, C)
                            int B, int T, int C) {
    #pragma omp parallel for collapse(2) if ((size_t)B * T * C >= PAR_MIN_WORK)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* we = wte + (size_t)inp[b * T + t] * C;
            const float* pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) { o[i] = we[i] + pe[i]; }
        }
    }
}

// Serial on purpose: several positions can hold the same token, so rows of
// dwte collide; a fixed order keeps the sums deterministic (and it is cheap).
static void encoder_backward(float* dwte, float* dwpe,  // (Vp, C), (maxT, C)
                             const float* dout,         // (B, T, C)
                             const int* inp,            // (B, T)
                             int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            float* dwe = dwte + (size_t)inp[b * T + t] * C;
            float* dpe = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) {
                dwe[i] += d[i];
                dpe[i] += d[i];
            }
        }
    }
}

#define LN_EPS 1e-5f

// out = (x - mean) * rstd * weight + bias over the C channels of each row
static void layernorm_forward(float* out, float* mean, float* rstd,  // (N, C), (N), (N)
                              const float* inp,                     // (N, C)
                              const float* weight, const float* bias, // (C), (C)
                              int N, int C) {
    #pragma omp parallel for if ((size_t)N * C >= PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        // the sums in vector lanes (omp simd): a fixed order the compiler chooses, the same for
        // every row and thread; one long chain of dependent adds was a third of the LayerNorm's time
        float m = 0.0f;
        #pragma omp simd reduction(+:m)
        for (int i = 0; i < C; i++) { m += x[i]; }
        m /= C;
        float v = 0.0f;
        #pragma omp simd reduction(+:v)
        for (int i = 0; i < C; i++) { float d = x[i] - m; v += d * d; }
        v /= C;
        float s = 1.0f / sqrtf(v + LN_EPS);
        float* o = out + (size_t)n * C;
        for (int i = 0; i < C; i++) { o[i] = (x[i] - m) * s * weight[i] + bias[i]; }
        mean[n] = m;
        rstd[n] = s;
    }
}

static void layernorm_backward(float* dinp, float* dweight, float* dbias,  // (N, C), (C), (C)
                               const float* dout, const float* inp,        // (N, C), (N, C)
                               const float* weight,                        // (C)
                               const float* mean, const float* rstd,       // (N), (N)
                               int N, int C) {
    // dinp: rows are independent
    #pragma omp parallel for if ((size_t)N * C >= PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * C;
        const float* x = inp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        #pragma omp simd reduction(+:dnorm_mean, dnorm_norm_mean)
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float* di = dinp + (size_t)n * C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * s;
            float dnorm = weight[i] * d[i];
            di[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
    // dweight, dbias: sums over rows, in row order, each block of COLUMN_BLOCK columns on one
    // thread (the order of every column's sum is the same on any number of threads); none for a
    // frozen LayerNorm (dweight NULL: LoRA)
    if (dweight == NULL) { return; }
    int blocks = (C + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
    #pragma omp parallel for if ((size_t)N * C >= PAR_MIN_WORK)
    for (int blk = 0; blk < blocks; blk++) {
        int i0 = blk * COLUMN_BLOCK, i1 = i0 + COLUMN_BLOCK < C ? i0 + COLUMN_BLOCK : C;
        for (int n = 0; n < N; n++) {
            const float* d = dout + (size_t)n * C;
            const float* x = inp + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            for (int i = i0; i < i1; i++) {
                dweight[i] += (x[i] - m) * s * d[i];
                dbias[i] += d[i];
            }
        }
    }
}

#ifdef USE_BLAS
// Tiles of sgemm_tiled: at most SGEMM_MAX_TILES tiles of at least SGEMM_MIN_TILE_ROWS rows (or
// columns; a multiple of 16), a function of the tiled extent alone. OpenBLAS rounds an element
// differently depending on the shape of the call it is part of (edge kernels, small-matrix paths),
// so the tiles, not the threads, decide the calls: every thread count makes the same calls with
// the same shapes and offsets, and gets the same bits with any OpenBLAS kernel. Each tile re-packs
// the operand the tiles share, so tiles are few and large; 8 of them keep up to 8 threads busy.
#define SGEMM_MAX_TILES 8
#define SGEMM_MIN_TILE_ROWS 128
static int sgemm_tile_rows(int M) {
    int rows = (M + SGEMM_MAX_TILES - 1) / SGEMM_MAX_TILES;
    rows = (rows + 15) / 16 * 16;
    return rows < SGEMM_MIN_TILE_ROWS ? SGEMM_MIN_TILE_ROWS : rows;
}

// Split-K scratch of sgemm_tiled: grown as needed, only ever used from the thread that calls it
// (outside parallel regions), freed at exit with the process.
static float* g_splitk_scratch;
static size_t g_splitk_floats;

// C (M, N) = op(A) op(B) + beta * C for K longer than M and N (a weight gradient, K = B*T rows;
// the classifier's d(lnf), K = Vp): K cut into tiles (sgemm_tile_rows(K)), each tile's product
// written to its own slot of the scratch by one single-threaded call, then C = beta * C + the
// slots in tile order, element by element. Each tile packs only its own part of K, where tiles
// over M or N would each re-pack all of K of the other operand; the sum's order is fixed by the
// tiles, so the bits are the same for every thread count. beta is 0 or 1.
static void sgemm_split_k(int transA, int transB, int M, int N, int K, const float* A, int lda,
                          const float* Bm, int ldb, float beta, float* Cm, int ldc) {
    int tile = sgemm_tile_rows(K);
    int tiles = (K + tile - 1) / tile;
    size_t mn = (size_t)M * N;
    if (g_splitk_floats < mn * tiles) {
        free(g_splitk_scratch);
        g_splitk_floats = mn * tiles;
        g_splitk_scratch = (float*)mallocCheck(g_splitk_floats * sizeof(float));
    }
    float* slots = g_splitk_scratch;
    #pragma omp parallel for schedule(static) if ((size_t)M * N * K >= PAR_MIN_WORK * 64)
    for (int i = 0; i < tiles; i++) {
        int k0 = i * tile, k1 = k0 + tile < K ? k0 + tile : K;
        const float* a = transA ? A + (size_t)k0 * lda : A + k0;
        const float* b = transB ? Bm + k0 : Bm + (size_t)k0 * ldb;
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    M, N, k1 - k0, 1.0f, a, lda, b, ldb, 0.0f, slots + mn * i, N);
    }
    #pragma omp parallel for if (mn * tiles >= PAR_MIN_WORK)
    for (int r = 0; r < M; r++) {
        float* c = Cm + (size_t)r * ldc;
        if (beta == 0.0f) { memcpy(c, slots + (size_t)r * N, (size_t)N * sizeof(float)); }
        for (int i = beta == 0.0f ? 1 : 0; i < tiles; i++) {
            const float* sl = slots + mn * i + (size_t)r * N;
            for (int j = 0; j < N; j++) { c[j] += sl[j]; }
        }
    }
}

// Split-K where K is the long side: at least 2 tiles of it and a scratch of at most 16 MB.
static int use_split_k(int M, int N, int K) {
    int tile = sgemm_tile_rows(K);
    int tiles = (K + tile - 1) / tile;
    return K > M && K > N && tiles >= 2 && (size_t)M * N * tiles <= ((size_t)1 << 22);
}

// C (M, N) = op(A) op(B) + beta * C, row-major, as one single-threaded cblas_sgemm call per tile,
// the tiles shared out over the OpenMP threads. Where K is the long side, sgemm_split_k cuts K;
// else the tiles cut the rows of C (sgemm_tile_rows(M)), or its columns when C is wider than tall (the classifier's chunk of logits, a few hundred rows
// by the vocabulary): then each tile packs only its own part of B.
// transA: A is stored (K, M) instead of (M, K). transB: B is stored (N, K).
static void sgemm_tiled(int transA, int transB, int M, int N, int K,
                        const float* A, int lda, const float* Bm, int ldb,
                        float beta, float* Cm, int ldc) {
    if (use_split_k(M, N, K)) {
        sgemm_split_k(transA, transB, M, N, K, A, lda, Bm, ldb, beta, Cm, ldc);
        return;
    }
    int by_cols = N > M;
    int extent = by_cols ? N : M;
    int tile = sgemm_tile_rows(extent);
    int tiles = (extent + tile - 1) / tile;
    #pragma omp parallel for schedule(static) if (tiles > 1 && (size_t)M * N * K >= PAR_MIN_WORK * 64)
    for (int i = 0; i < tiles; i++) {
        int e0 = i * tile, e1 = e0 + tile < extent ? e0 + tile : extent;
        const float* a = A;
        const float* b = Bm;
        float* c = Cm;
        int m = M, n = N;
        if (by_cols) {
            b = transB ? Bm + (size_t)e0 * ldb : Bm + e0;
            c = Cm + e0;
            n = e1 - e0;
        } else {
            a = transA ? A + e0 : A + (size_t)e0 * lda;
            c = Cm + (size_t)e0 * ldc;
            m = e1 - e0;
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, m, n, K, 1.0f, a, lda, b, ldb, beta, c, ldc);
    }
}
#endif

// out = inp @ weight^T + bias, or with accumulate (no bias) out += inp @ weight^T (LoRA's second
// product)
static void matmul_forward_into(float* out,                              // (N, OC)
                                const float* inp,                        // (N, IC)
                                const float* weight, const float* bias,  // (OC, IC), (OC) or NULL
                                int N, int IC, int OC, int accumulate) {
    if (accumulate && bias != NULL) { fatal("internal: matmul_forward_into accumulates without a bias"); }
#ifdef USE_BLAS
    // with a bias: out starts as the bias and sgemm adds to it (beta = 1), one pass over out
    // instead of OpenBLAS zeroing it (beta = 0) and a second pass adding the bias
    if (bias != NULL) {
        #pragma omp parallel for if ((size_t)N * OC >= PAR_MIN_WORK)
        for (int n = 0; n < N; n++) { memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float)); }
    }
    sgemm_tiled(0, 1, N, OC, IC, inp, IC, weight, IC, bias != NULL || accumulate ? 1.0f : 0.0f, out, OC);
#else
    #pragma omp parallel for if ((size_t)N * OC * IC >= PAR_MIN_WORK * 64)
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * IC;
        float* o = out + (size_t)n * OC;
        for (int oc = 0; oc < OC; oc++) {
            const float* w = weight + (size_t)oc * IC;
            float val = 0.0f;
            #pragma omp simd reduction(+:val)
            for (int i = 0; i < IC; i++) { val += x[i] * w[i]; }
            o[oc] = val + (accumulate ? o[oc] : bias != NULL ? bias[oc] : 0.0f);
        }
    }
#endif
}

static void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int IC,
                           int OC) {
    matmul_forward_into(out, inp, weight, bias, N, IC, OC, 0);
}

// dinp += dout @ weight; dweight += dout^T @ inp unless dweight is NULL (a frozen weight: LoRA);
// dbias += the column sums of dout unless NULL.
static void matmul_backward(float* dinp, float* dweight, float* dbias,  // (N, IC), (OC, IC) or NULL, (OC) or NULL
                            const float* dout,                          // (N, OC)
                            const float* inp, const float* weight,      // (N, IC), (OC, IC)
                            int N, int IC, int OC) {
#ifdef USE_BLAS
    sgemm_tiled(0, 0, N, IC, OC, dout, OC, weight, IC, 1.0f, dinp, IC);     // dinp += dout @ weight
    if (dweight != NULL) { sgemm_tiled(1, 0, OC, IC, N, dout, OC, inp, IC, 1.0f, dweight, IC); }  // dweight += dout^T @ inp
#else
    #pragma omp parallel for if ((size_t)N * OC * IC >= PAR_MIN_WORK * 64)
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * OC;
        float* di = dinp + (size_t)n * IC;
        for (int oc = 0; oc < OC; oc++) {
            const float* w = weight + (size_t)oc * IC;
            float g = d[oc];
            for (int i = 0; i < IC; i++) { di[i] += w[i] * g; }
        }
    }
    #pragma omp parallel for if (dweight != NULL && (size_t)N * OC * IC >= PAR_MIN_WORK * 64)
    for (int oc = 0; oc < (dweight != NULL ? OC : 0); oc++) {
        float* dw = dweight + (size_t)oc * IC;
        for (int n = 0; n < N; n++) {
            const float* x = inp + (size_t)n * IC;
            float g = dout[(size_t)n * OC + oc];
            for (int i = 0; i < IC; i++) { dw[i] += x[i] * g; }
        }
    }
#endif
    if (dbias != NULL) { // sum over rows, in row order, a block of columns per thread (as layernorm_backward)
        int blocks = (OC + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
        #pragma omp parallel for if ((size_t)N * OC >= PAR_MIN_WORK)
        for (int blk = 0; blk < blocks; blk++) {
            int o0 = blk * COLUMN_BLOCK, o1 = o0 + COLUMN_BLOCK < OC ? o0 + COLUMN_BLOCK : OC;
            for (int n = 0; n < N; n++) {
                const float* d = dout + (size_t)n * OC;
                for (int oc = o0; oc < o1; oc++) { dbias[oc] += d[oc]; }
            }
        }
    }
}

// LoRA on one matmul (llmc/lora.h): out (N, OUT) += u @ B^T with u = scale * inp @ A^T (N, r),
// kept for the backward. A (r, IN) and B (OUT, r) are this layer's slices of the adapters.
static void lora_forward(float* out, float* u, const float* inp, const float* A, const float* B, float scale,
                         int N, int IN, int OUT, int r) {
    matmul_forward(u, inp, A, NULL, N, IN, r);
    size_t n = (size_t)N * r;
    #pragma omp parallel for if (n >= PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) { u[i] *= scale; }
    matmul_forward_into(out, u, B, NULL, N, r, OUT, 1);
}

// The backward of lora_forward: dB += dout^T u; du = scale * dout @ B (du: an (N, r) scratch);
// dA += du^T inp; dinp += du @ A.
static void lora_backward(float* dinp, float* dA, float* dB, float* du, const float* dout, const float* inp,
                          const float* u, const float* A, const float* B, float scale, int N, int IN, int OUT, int r) {
    size_t n = (size_t)N * r;
    memset(du, 0, n * sizeof(float));
    matmul_backward(du, dB, NULL, dout, u, B, N, r, OUT);
    #pragma omp parallel for if (n >= PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) { du[i] *= scale; }
    matmul_backward(dinp, dA, NULL, du, inp, A, N, IN, r);
}

// exp(x) for -87 <= x <= 0, vectorizable (the classifier calls it B*T*V
// times per step, where libm's scalar expf took 15% of the step; attention and GELU use it too). Cephes'
// expf scheme: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), a
// degree-7 polynomial for exp(r), then 2^k through the float exponent bits.
// Relative error ~1e-7 (about 1 ulp). No clamping inside (a clamp stops GCC
// from vectorizing): the caller guarantees the range.
static inline float exp_nonpositive(float x) {
    int32_t ki = (int32_t)(x * 1.44269504088896341f - 0.5f); // round(x / ln2); x <= 0, so truncation
    float k = (float)ki;
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t bits = (ki + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

#ifdef USE_BLAS
// Attention on sgemm for T >= ATTENTION_BLAS_MIN_T (below it the loops beneath are faster: the
// per-call overhead of OpenBLAS outweighs 7x7 products). Per (b, h), single-threaded calls inside
// the loop over the pairs (each pair writes only its own head's slices, and the calls' shapes
// are the same for every thread count): S = Q K^T * scale over the full T x T (the causal upper
// half is computed and discarded: on sgemm that is still far faster than the loops' dot
// products), the causal softmax row by row into att (zeros above the diagonal), and
// out = P V with P = att (times the dropout factors D, in the scratch, with dropout).
#define ATTENTION_BLAS_MIN_T 32

// the causal softmax of row t of the scores (t + 1 entries) in place, zeros after them up to T
static void causal_softmax_row(float* a, int t, int T) {
    float maxval = a[0];
    for (int t2 = 1; t2 <= t; t2++) { maxval = a[t2] > maxval ? a[t2] : maxval; }
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        float x = a[t2] - maxval;
        x = x < -87.0f ? -87.0f : x;  // exp(-87) = 1.6e-38, negligible beside the largest weight, 1
        float e = exp_nonpositive(x);
        a[t2] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= t; t2++) { a[t2] *= inv; }
    for (int t2 = t + 1; t2 < T; t2++) { a[t2] = 0.0f; }
}

static void attention_forward_blas(float* out, float* att, const float* qkv, float* scratch,
                                   const DropoutConfig* drop, uint64_t drop_key, int B, int T, int C, int NH) {
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* q = qkv + (size_t)b * T * C3 + (size_t)h * HS;
            const float* k = q + C;
            const float* v = q + 2 * C;
            size_t base = ((size_t)b * NH + h) * T * T;  // index of att[b,h,0,0]
            float* a = att + base;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, q, C3, k, C3, 0.0f, a, T);
            for (int t = 0; t < T; t++) { causal_softmax_row(a + (size_t)t * T, t, T); }
            const float* p = a;
            if (drop) {
                float* pd = scratch + (size_t)thread_id() * 2 * T * T;
                for (int t = 0; t < T; t++) {
                    for (int t2 = 0; t2 < T; t2++) {
                        size_t i = (size_t)t * T + t2;
                        pd[i] = t2 <= t ? a[i] * dropout_factor(drop_key, base + i, drop->threshold, drop->scale) : 0.0f;
                    }
                }
                p = pd;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, p, T, v, C3, 0.0f,
                        out + (size_t)b * T * C + (size_t)h * HS, C);
        }
    }
}

// The backward of attention_forward_blas per (b, h), with P = att * D as in the forward:
// dP = dout V^T (times D: d(att)), dV += P^T dout, dS = att * (d(att) - rowsum(att * d(att))) * scale
// (zero above the diagonal), dQ += dS K, dK += dS^T Q. scratch: 2 T x T floats per thread.
static void attention_backward_blas(float* dqkv, const float* dout, const float* qkv, const float* att,
                                    float* scratch, const DropoutConfig* drop, uint64_t drop_key,
                                    int B, int T, int C, int NH) {
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            size_t off = (size_t)b * T * C3 + (size_t)h * HS;
            const float* q = qkv + off;
            const float* k = q + C;
            const float* v = q + 2 * C;
            float* dq = dqkv + off;
            float* dk = dq + C;
            float* dv = dq + 2 * C;
            const float* d = dout + (size_t)b * T * C + (size_t)h * HS;
            size_t base = ((size_t)b * NH + h) * T * T;
            const float* a = att + base;
            float* ds = scratch + (size_t)thread_id() * 2 * T * T;  // d(att), then dS
            float* pd = ds + (size_t)T * T;                          // P = att * D with dropout
            const float* p = a;
            if (drop) {
                for (size_t i = 0; i < (size_t)T * T; i++) {
                    int t = (int)(i / T), t2 = (int)(i % T);
                    pd[i] = t2 <= t ? a[i] * dropout_factor(drop_key, base + i, drop->threshold, drop->scale) : 0.0f;
                }
                p = pd;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, 1.0f, d, C, v, C3, 0.0f, ds, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, p, T, d, C, 1.0f, dv, C3);
            for (int t = 0; t < T; t++) {
                float* g = ds + (size_t)t * T;
                const float* ar = a + (size_t)t * T;
                if (drop) {
                    for (int t2 = 0; t2 <= t; t2++) {
                        g[t2] *= dropout_factor(drop_key, base + (size_t)t * T + t2, drop->threshold, drop->scale);
                    }
                }
                float dot_sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) { dot_sum += ar[t2] * g[t2]; }
                for (int t2 = 0; t2 <= t; t2++) { g[t2] = ar[t2] * (g[t2] - dot_sum) * scale; }
                for (int t2 = t + 1; t2 < T; t2++) { g[t2] = 0.0f; }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, ds, T, k, C3, 1.0f, dq, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, ds, T, q, C3, 1.0f, dk, C3);
        }
    }
}
#endif

// Causal self-attention. qkv holds Q, K, V as three C-wide blocks per
// position; head h uses channels [h*HS, (h+1)*HS) of each block.
// att[b,h,t,t2] = softmax over t2 <= t of (q_t . k_t2) / sqrt(HS); entries
// t2 > t are not written and never read. out[b,t,h] = sum_t2 att * D * v_t2,
// where D = dropout_factor(drop_key, index of att[b,h,t,t2]) with dropout on
// (drop != NULL) and 1 without; att keeps the weights before dropout.
static void attention_forward(float* out,        // (B, T, C)
                              float* att,        // (B, NH, T, T)
                              const float* qkv,  // (B, T, 3*C)
                              float* scratch,    // (threads, 2*T*T) for the sgemm path's dropout
                              const DropoutConfig* drop, uint64_t drop_key,  // NULL: no dropout
                              int B, int T, int C, int NH) {
#ifdef USE_BLAS
    if (T >= ATTENTION_BLAS_MIN_T) {
        attention_forward_blas(out, att, qkv, scratch, drop, drop_key, B, T, C, NH);
        return;
    }
#endif
    (void)scratch;
    int HS = C / NH;
    float scale = 1.0f / sqrtf((float)HS);
    size_t C3 = (size_t)C * 3;
    #pragma omp parallel for collapse(3) if ((size_t)B * T * T * C >= PAR_MIN_WORK * 64)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < NH; h++) {
                const float* q = qkv + ((size_t)b * T + t) * C3 + (size_t)h * HS;
                float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxval = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = qkv + ((size_t)b * T + t2) * C3 + C + (size_t)h * HS;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int i = 0; i < HS; i++) { dot += q[i] * k[i]; }
                    dot *= scale;
                    a[t2] = dot;
                    if (dot > maxval) { maxval = dot; }
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    float e = expf(a[t2] - maxval);
                    a[t2] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) { a[t2] *= inv; }
                float* o = out + ((size_t)b * T + t) * C + (size_t)h * HS;
                for (int i = 0; i < HS; i++) { o[i] = 0.0f; }
                size_t row = (((size_t)b * NH + h) * T + t) * T; // index of att[b,h,t,0]
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = qkv + ((size_t)b * T + t2) * C3 + 2 * (size_t)C + (size_t)h * HS;
                    float w = a[t2];
                    if (drop) { w *= dropout_factor(drop_key, row + t2, drop->threshold, drop->scale); }
                    for (int i = 0; i < HS; i++) { o[i] += w * v[i]; }
                }
            }
        }
    }
}

// Parallel over (b, h): each pair writes only its own head's slice of dqkv.
// scratch: (threads, T) floats for one row of d(pre-softmax scores).
// With dropout the weights that multiplied V were att * D (see the forward):
// dv gets att * D * dout, and d(att) = D * (dout . v) enters the softmax backward.
static void attention_backward(float* dqkv,                         // (B, T, 3*C)
                               const float* dout,                   // (B, T, C)
                               const float* qkv, const float* att,  // (B, T, 3*C), (B, NH, T, T)
                               float* scratch,                      // (threads, 2*T*T)
                               const DropoutConfig* drop, uint64_t drop_key,  // as in the forward
                               int B, int T, int C, int NH) {
#ifdef USE_BLAS
    if (T >= ATTENTION_BLAS_MIN_T) {
        attention_backward_blas(dqkv, dout, qkv, att, scratch, drop, drop_key, B, T, C, NH);
        return;
    }
#endif
    int HS = C / NH;
    float scale = 1.0f / sqrtf((float)HS);
    size_t C3 = (size_t)C * 3;
    #pragma omp parallel for collapse(2) if ((size_t)B * T * T * C >= PAR_MIN_WORK * 64)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            float* dpre = scratch + (size_t)thread_id() * 2 * T * T;
            for (int t = 0; t < T; t++) {
                size_t row = (((size_t)b * NH + h) * T + t) * T;
                const float* a = att + row;
                const float* d = dout + ((size_t)b * T + t) * C + (size_t)h * HS;
                // d(att)[t2] = D (d . v_t2), and dv_t2 += att[t2] D d  (D = 1 without dropout)
                float dot_sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = qkv + ((size_t)b * T + t2) * C3 + 2 * (size_t)C + (size_t)h * HS;
                    float* dv = dqkv + ((size_t)b * T + t2) * C3 + 2 * (size_t)C + (size_t)h * HS;
                    float D = drop ? dropout_factor(drop_key, row + t2, drop->threshold, drop->scale) : 1.0f;
                    float datt = 0.0f;
                    #pragma omp simd reduction(+:datt)
                    for (int i = 0; i < HS; i++) { datt += d[i] * v[i]; }
                    float w = a[t2] * D;
                    for (int i = 0; i < HS; i++) { dv[i] += w * d[i]; }
                    datt *= D;
                    dpre[t2] = datt;
                    dot_sum += a[t2] * datt;
                }
                // softmax backward: dpre = att * (datt - sum(att * datt))
                for (int t2 = 0; t2 <= t; t2++) { dpre[t2] = a[t2] * (dpre[t2] - dot_sum) * scale; }
                // scores = q . k * scale: dq += dpre * k, dk += dpre * q
                const float* q = qkv + ((size_t)b * T + t) * C3 + (size_t)h * HS;
                float* dq = dqkv + ((size_t)b * T + t) * C3 + (size_t)h * HS;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = qkv + ((size_t)b * T + t2) * C3 + C + (size_t)h * HS;
                    float* dk = dqkv + ((size_t)b * T + t2) * C3 + C + (size_t)h * HS;
                    float g = dpre[t2];
                    for (int i = 0; i < HS; i++) {
                        dq[i] += g * k[i];
                        dk[i] += g * q[i];
                    }
                }
            }
        }
    }
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#define GELU_SCALE 0.7978845608028654f // sqrt(2/pi)

// GELU (tanh form): gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). With
// t = exp(-2|u|) in (0, 1]: 0.5 (1 + tanh u) = 1 / (1 + t) for u >= 0 and t / (1 + t) for u < 0,
// and sech^2 u = 1 - tanh^2 u = 4 t / (1 + t)^2. Written this way every factor keeps its
// relative accuracy (1 + tanh u for u << 0 is not a difference of two numbers near 1), there is
// no cosh to overflow, and the loop vectorizes (libm's scalar tanhf was ~40% of a mod97 step).
// |u| is capped at 43.5, so -2|u| >= -87 (exp_nonpositive's range; t = 2^-126 there, so the factor
// is 1 or ~1e-38), and so is a NaN's (x carries it into the result: a NaN input stays NaN).
typedef struct {
    float half_one_plus_tanh;  // 0.5 (1 + tanh u)
    float sech2;               // 1 - tanh^2 u
} GeluTanh;

static inline GeluTanh gelu_tanh(float x) {
    float u = GELU_SCALE * (x + 0.044715f * x * x * x);
    // |u| capped at 43.5 on its bits: for a non-negative float (NaN and inf included) the integer
    // order is the float order, an integer select vectorizes where a float clamp does not, and a
    // NaN or inf becomes 43.5 too (exp_nonpositive must never see them)
    float a = fabsf(u);
    int32_t ai;
    memcpy(&ai, &a, sizeof(ai));
    ai = ai < 0x422E0000 ? ai : 0x422E0000;  // the bits of 43.5f
    memcpy(&a, &ai, sizeof(a));
    float t = exp_nonpositive(-2.0f * a);
    float s = 1.0f / (1.0f + t);
    // 0.5 (1 + tanh u) = num * s with num = 1 for u >= 0 and t for u < 0, num chosen on the bits
    // by u's sign: GCC makes a branch of `u >= 0 ? s : t * s` on some targets (-march=znver3 when
    // the caller needs no sech2), and a branch stops the loop from vectorizing (scalar, gelu_forward
    // was 17% of a mod97 step). u = -0 takes t = 1, so num * s = s either way.
    int32_t ub, tb, num_bits, one_bits = 0x3F800000;  // the bits of 1.0f
    memcpy(&ub, &u, sizeof(ub));
    memcpy(&tb, &t, sizeof(tb));
    int32_t negative = ub >> 31;  // all ones when u's sign bit is set (arithmetic shift)
    num_bits = (tb & negative) | (one_bits & ~negative);
    float num;
    memcpy(&num, &num_bits, sizeof(num));
    GeluTanh g;
    g.half_one_plus_tanh = num * s;
    g.sech2 = 4.0f * (t * s) * s;
    return g;
}

static void gelu_forward(float* out, const float* inp, size_t N) { // (N), (N)
    #pragma omp parallel for simd if (N >= PAR_MIN_WORK)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = x * gelu_tanh(x).half_one_plus_tanh;
    }
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x sech^2(u) du/dx. This is the function -ffast-math
// breaks, so nothing here uses it.
static void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) { // (N) x3
    #pragma omp parallel for simd if (N >= PAR_MIN_WORK)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        GeluTanh g = gelu_tanh(x);
        float local = g.half_one_plus_tanh + 0.5f * x * g.sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

static void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) { // (N) x3
    #pragma omp parallel for if (N >= PAR_MIN_WORK)
    for (size_t i = 0; i < N; i++) { out[i] = inp1[i] + inp2[i]; }
}

static void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) { // (N) x3
    #pragma omp parallel for if (N >= PAR_MIN_WORK)
    for (size_t i = 0; i < N; i++) {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}

// Dropout at one site, in place: x[i] *= D_i with D_i = dropout_factor(key, i)
// (0, or 1/(1-p)). Applied to the site's output in the forward pass and to the
// gradient of that output in the backward pass (the same D_i multiplies both).
static void dropout_apply(float* x, size_t n, uint64_t key, const DropoutConfig* d) { // (n)
    #pragma omp parallel for if (n >= PAR_MIN_WORK)
    for (size_t i = 0; i < n; i++) { x[i] *= dropout_factor(key, i, d->threshold, d->scale); }
}

// In place over n rows of logits: the softmax over the first V of the Vp columns (the padded
// columns get 0), the loss -log p[target] of every row and, when argmax != NULL, the first index
// of the largest of the first V logits. With dloss != NULL the rows become the gradient of the
// loss instead of the probabilities: dlogits[r, v] = (p[r, v] - [v == target]) * dloss[r]. (One
// pointer for logits in and probabilities or gradients out on purpose: with two, GCC guards the
// vectorized exp loop with an overlap check that in-place use always fails.)
static void softmax_crossentropy(float* losses, int* argmax,  // (n), (n) or NULL
                                 float* probs,                // (n, Vp) logits in, probabilities or dlogits out
                                 const int* targets,          // (n)
                                 const float* dloss,          // (n) d(mean loss)/d(loss[r]), or NULL
                                 int n, int V, int Vp) {
    #pragma omp parallel for if ((size_t)n * Vp >= PAR_MIN_WORK)
    for (int r = 0; r < n; r++) {
        float* p = probs + (size_t)r * Vp;
        float maxval = p[0], minval = p[0], check = 0.0f; // check: NaN or inf when some logit is
        #pragma omp simd reduction(max:maxval) reduction(min:minval) reduction(+:check)
        for (int v = 0; v < V; v++) {
            maxval = p[v] > maxval ? p[v] : maxval;
            minval = p[v] < minval ? p[v] : minval;
            check += p[v] * 0.0f;
        }
        if (argmax != NULL) {
            int best = 0;
            while (best < V - 1 && !(p[best] == maxval)) { best++; }
            argmax[r] = best;
        }
        float target_logit = p[targets[r]];
        double sum = 0.0;
        if (check == 0.0f && maxval - minval <= 86.0f) { // every p[v] - maxval in [-86, 0]
            #pragma omp simd reduction(+:sum)
            for (int v = 0; v < V; v++) {
                float e = exp_nonpositive(p[v] - maxval);
                p[v] = e;
                sum += e;
            }
        } else { // NaN or inf logits (libm lets the NaN reach the loss), or a range over 86
            for (int v = 0; v < V; v++) { p[v] = expf(p[v] - maxval); sum += p[v]; }
        }
        float inv = (float)(1.0 / sum);
        if (dloss != NULL) {
            float g = dloss[r];
            for (int v = 0; v < V; v++) { p[v] = (p[v] * inv) * g; }
            p[targets[r]] -= g;
        } else {
            for (int v = 0; v < V; v++) { p[v] *= inv; }
        }
        for (int v = V; v < Vp; v++) { p[v] = 0.0f; }
        // -log softmax[target] = log(sum) + max - logit[target]; exact even when p[target] underflows
        losses[r] = (float)(log(sum) + (double)maxval - (double)target_logit);
    }
}

// ----------------------------------------------------------------------------
// the model

#define NUM_ACTIVATION_TENSORS 21  // of llmc/activations.h's 22: all but att_lse
// Logits per chunk of the fused classifier (64 MB): d4's 50,304-token vocabulary gets chunks of
// 256 positions, a small vocabulary the whole batch at once (llmc/loss.h classifier_chunk_rows).
#define CPU_CLASSIFIER_FLOATS ((size_t)1 << 24)
// with_stats = 0 gives the gradient-buffer sizes: means, rstds, att, logits
// and losses get no gradient buffer (attention backward uses a row scratch,
// dlogits are written over the chunk's logits, d(losses) is the dloss weight vector).
// The logits hold one chunk of classifier_rows positions (or all of B*T if fewer).
static void fill_activation_sizes(size_t* sizes, const GPT2Config* cfg, int B, int T, int with_stats,
                                  int classifier_rows) {
    size_t C = (size_t)cfg->channels, NH = (size_t)cfg->num_heads, L = (size_t)cfg->num_layers;
    size_t Vp = (size_t)cfg->padded_vocab_size, BT = (size_t)B * (size_t)T;
    size_t s = with_stats ? 1 : 0;
    size_t chunk = (size_t)classifier_rows < BT ? (size_t)classifier_rows : BT;
    size_t all[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * C, s * L * BT, s * L * BT, L * BT * 3 * C, L * BT * C,
        s * L * BT * NH * (size_t)T, L * BT * C, L * BT * C, L * BT * C, s * L * BT, s * L * BT,
        L * BT * 4 * C, L * BT * 4 * C, L * BT * C, L * BT * C, BT * C, s * BT, s * BT,
        s * chunk * Vp, s * BT,
    };
    memcpy(sizes, all, sizeof(all));
}

static float* alloc_activations(ActivationTensors* acts, const size_t* sizes, size_t* total_out) {
    float** ptrs[NUM_ACTIVATION_TENSORS] = {
        &acts->encoded, &acts->ln1, &acts->ln1_mean, &acts->ln1_rstd, &acts->qkv, &acts->atty,
        &acts->att, &acts->attproj, &acts->residual2, &acts->ln2, &acts->ln2_mean, &acts->ln2_rstd,
        &acts->fch, &acts->fch_gelu, &acts->fcproj, &acts->residual3, &acts->lnf, &acts->lnf_mean,
        &acts->lnf_rstd, &acts->logits, &acts->losses,
    };
    size_t total = 0;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) { total += sizes[i]; }
    float* mem = (float*)mallocCheck(total * sizeof(float));
    float* p = mem;
    for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) {
        *(ptrs[i]) = sizes[i] ? p : NULL;
        p += sizes[i];
    }
    *total_out = total;
    return mem;
}

typedef struct {
    GPT2Config config;
    size_t param_sizes[NUM_PARAMETER_TENSORS];
    size_t num_parameters;         // P
    ParameterTensors params;
    float* params_memory;          // (P)
    ParameterTensors grads;
    float* grads_memory;           // (P)
    float* m_memory;               // (P) AdamW first moment
    float* v_memory;               // (P) AdamW second moment
    int B, T;                      // the largest batch the buffers hold
    ActivationTensors acts;
    float* acts_memory;
    size_t num_activations;
    ActivationTensors grads_acts;
    float* grads_acts_memory;
    size_t num_grad_acts;
    int* argmax;                   // (B, T)
    float* dloss;                  // (B, T) weight of each position in the mean loss
    float* att_scratch;            // (threads, 2*T*T) attention's per-thread scratch
    float* saved_logits;           // (B, T, Vp) parity mode: logits before the softmax
    float* att_out;                // (L, B, NH, T, T) --parity-attention: att with zeros above the diagonal
    int classifier_rows;           // positions per chunk of the fused classifier
    // LoRA (llmc/lora.h): with lora.rank > 0 the parameters are frozen (grads_memory is NULL) and
    // the adapters train; m and v then hold Q floats
    LoraConfig lora;
    float* lora_memory;            // (Q) the adapters
    float* lora_grads_memory;      // (Q) their gradients
    LoraTensors lora_p, lora_g;
    float* lora_u;                 // (4, L, B*T, r): each target's u = scale * inp @ A^T (targets in use only)
    float* lora_du;                // (B*T, r) scratch of the backward
    float* trained;                // what AdamW updates: params_memory, or lora_memory
    float* trained_grads;          // its gradients
    size_t num_trained;            // P or Q
    // research regularizers (llmc/regularizers.h)
    RegularizerState reg;  // --seed, --dropout and the step of the current pass (llmc/regularizers.h)
    float* init_params;            // (P) the parameters before step 1 (--decay-toward-init), else NULL
    float* clean_params;           // (P) the clean parameters during a noisy step (--weight-noise), else NULL
    // results of the last forward with targets
    LossSummary loss;              // of the last forward with targets (llmc/loss.h)
} GPT2;

static void gpt2_build_from_checkpoint(GPT2* model, const char* path) {
    memset(model, 0, sizeof(*model));
    model->params_memory = checkpoint_load(path, &model->config, &model->num_parameters);
    fill_param_sizes(model->param_sizes, &model->config);
    point_parameters(&model->params, model->params_memory, model->param_sizes);
}

// Bytes the run will hold: the parameters and `param_copies` more P-sized buffers (gradients,
// m, v, and the clean or initial copies of the regularizers), activations and their gradients
// for (B, T), and the logits kept in parity mode. With LoRA: the parameters, and the adapters
// with their gradients, m, v and the u and du buffers.
static double gpt2_memory_bytes(const GPT2* model, const LoraConfig* lora, int B, int T, int keep_logits,
                                int param_copies) {
    size_t sizes[NUM_ACTIVATION_TENSORS];
    double floats = (double)model->num_parameters * (1 + (lora->rank > 0 ? 0 : param_copies));
    if (lora->rank > 0) {
        floats += 4.0 * (double)lora->total + (double)B * T * lora->rank * (1.0 + LORA_NUM_TARGETS * lora->L);
    }
    for (int with_stats = 0; with_stats <= 1; with_stats++) {
        fill_activation_sizes(sizes, &model->config, B, T, with_stats, model->classifier_rows);
        for (int i = 0; i < NUM_ACTIVATION_TENSORS; i++) { floats += (double)sizes[i]; }
    }
    double BT = (double)B * T;
    floats += 2 * BT + (double)num_threads() * 2 * T * T;  // argmax, dloss, attention scratch
    if (keep_logits) { floats += BT * model->config.padded_vocab_size; }
    return 4.0 * floats;
}

// Allocates gradients, optimizer state and activations for batches up to (B, T): of every
// parameter, or with LoRA (lora->rank > 0) of the adapters only (the parameters' gradient
// pointers stay NULL: the backward skips their sums).
static void gpt2_allocate(GPT2* model, const LoraConfig* lora, int B, int T, int keep_logits) {
    size_t P = model->num_parameters;
    model->lora = *lora;
    if (lora->rank > 0) {
        size_t Q = lora->total;
        model->lora_memory = (float*)callocCheck(Q, sizeof(float));
        model->lora_grads_memory = (float*)callocCheck(Q, sizeof(float));
        lora_point(&model->lora_p, model->lora_memory, lora);
        lora_point(&model->lora_g, model->lora_grads_memory, lora);
        model->lora_u = (float*)callocCheck((size_t)LORA_NUM_TARGETS * lora->L * B * T * lora->rank, sizeof(float));
        model->lora_du = (float*)callocCheck((size_t)B * T * lora->rank, sizeof(float));
        memset(&model->grads, 0, sizeof(model->grads));
        model->trained = model->lora_memory;
        model->trained_grads = model->lora_grads_memory;
        model->num_trained = Q;
    } else {
        model->grads_memory = (float*)callocCheck(P, sizeof(float));
        point_parameters(&model->grads, model->grads_memory, model->param_sizes);
        model->trained = model->params_memory;
        model->trained_grads = model->grads_memory;
        model->num_trained = P;
    }
    model->m_memory = (float*)callocCheck(model->num_trained, sizeof(float));
    model->v_memory = (float*)callocCheck(model->num_trained, sizeof(float));
    model->B = B;
    model->T = T;
    size_t sizes[NUM_ACTIVATION_TENSORS];
    fill_activation_sizes(sizes, &model->config, B, T, 1, model->classifier_rows);
    model->acts_memory = alloc_activations(&model->acts, sizes, &model->num_activations);
    fill_activation_sizes(sizes, &model->config, B, T, 0, model->classifier_rows);
    model->grads_acts_memory = alloc_activations(&model->grads_acts, sizes, &model->num_grad_acts);
    model->argmax = (int*)mallocCheck((size_t)B * T * sizeof(int));
    model->dloss = (float*)mallocCheck((size_t)B * T * sizeof(float));
    model->att_scratch = (float*)mallocCheck((size_t)num_threads() * 2 * T * T * sizeof(float));
    model->saved_logits = keep_logits
        ? (float*)mallocCheck((size_t)B * T * model->config.padded_vocab_size * sizeof(float)) : NULL;
}

static void gpt2_free(GPT2* model) {
    free(model->params_memory);
    free(model->grads_memory);
    free(model->m_memory);
    free(model->v_memory);
    free(model->acts_memory);
    free(model->grads_acts_memory);
    free(model->argmax);
    free(model->dloss);
    free(model->att_scratch);
    free(model->saved_logits);
    free(model->att_out);
    free(model->init_params);
    free(model->clean_params);
    free(model->lora_memory);
    free(model->lora_grads_memory);
    free(model->lora_u);
    free(model->lora_du);
    memset(model, 0, sizeof(*model));
}


// Target k's u buffer of layer l for a batch of BT positions (llmc/lora.h, lora_forward).
static float* lora_u_of(const GPT2* model, int k, int l) {
    return model->lora_u + ((size_t)k * model->lora.L + (size_t)l) * (size_t)model->B * model->T * model->lora.rank;
}

// Encoder, the L blocks and the final LayerNorm: fills acts up to lnf.
// With dropout (active_dropout) at the four sites of llmc/regularizers.h.
static void gpt2_forward_trunk(GPT2* model, const int* inputs, int B, int T) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers;
    if (B > model->B || T > model->T) {
        fatal("internal: batch (%d, %d) exceeds the allocated (%d, %d)", B, T, model->B, model->T);
    }
    ParameterTensors p = model->params;
    ActivationTensors a = model->acts;
    size_t BT = (size_t)B * T, BTC = BT * C;
    const float* qkvb = cfg->no_qkv_bias ? NULL : p.qkvb;
    const DropoutConfig* drop = regularizer_dropout(&model->reg);
    const LoraConfig* lc = &model->lora;
    float scale = lc->rank > 0 ? lora_scale(lc) : 0.0f;
    int r = lc->rank;
    encoder_forward(a.encoded, inputs, p.wte, p.wpe, B, T, C);
    if (drop) { dropout_apply(a.encoded, BTC, regularizer_site_key(&model->reg, -1, DROPOUT_SITE_EMBED), drop); }
    for (int l = 0; l < L; l++) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        LayerActivations la = layer_activations(&a, cfg, B, T, l);
        size_t c = (size_t)C;
        layernorm_forward(la.ln1, la.ln1_mean, la.ln1_rstd, residual, p.ln1w + l * c, p.ln1b + l * c, (int)BT, C);
        matmul_forward(la.qkv, la.ln1, p.qkvw + l * 3 * c * c, qkvb ? qkvb + l * 3 * c : NULL, (int)BT, C, 3 * C);
        if (lora_targets(lc, LORA_QKVW)) {
            lora_forward(la.qkv, lora_u_of(model, LORA_QKVW, l), la.ln1, model->lora_p.A[LORA_QKVW] + l * r * c,
                         model->lora_p.B[LORA_QKVW] + l * 3 * c * r, scale, (int)BT, C, 3 * C, r);
        }
        attention_forward(la.atty, la.att, la.qkv, model->att_scratch, drop, drop ? regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN) : 0, B, T, C, NH);
        matmul_forward(la.attproj, la.atty, p.attprojw + l * c * c, p.attprojb + l * c, (int)BT, C, C);
        if (lora_targets(lc, LORA_ATTPROJW)) {
            lora_forward(la.attproj, lora_u_of(model, LORA_ATTPROJW, l), la.atty,
                         model->lora_p.A[LORA_ATTPROJW] + l * r * c, model->lora_p.B[LORA_ATTPROJW] + l * c * r, scale,
                         (int)BT, C, C, r);
        }
        if (drop) { dropout_apply(la.attproj, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN_PROJ), drop); }
        residual_forward(la.residual2, residual, la.attproj, BTC);
        layernorm_forward(la.ln2, la.ln2_mean, la.ln2_rstd, la.residual2, p.ln2w + l * c, p.ln2b + l * c, (int)BT, C);
        matmul_forward(la.fch, la.ln2, p.fcw + l * 4 * c * c, p.fcb + l * 4 * c, (int)BT, C, 4 * C);
        if (lora_targets(lc, LORA_FCW)) {
            lora_forward(la.fch, lora_u_of(model, LORA_FCW, l), la.ln2, model->lora_p.A[LORA_FCW] + l * r * c,
                         model->lora_p.B[LORA_FCW] + l * 4 * c * r, scale, (int)BT, C, 4 * C, r);
        }
        gelu_forward(la.fch_gelu, la.fch, BTC * 4);
        matmul_forward(la.fcproj, la.fch_gelu, p.fcprojw + l * 4 * c * c, p.fcprojb + l * c, (int)BT, 4 * C, C);
        if (lora_targets(lc, LORA_FCPROJW)) {
            lora_forward(la.fcproj, lora_u_of(model, LORA_FCPROJW, l), la.fch_gelu,
                         model->lora_p.A[LORA_FCPROJW] + l * r * 4 * c, model->lora_p.B[LORA_FCPROJW] + l * c * r,
                         scale, (int)BT, 4 * C, C, r);
        }
        if (drop) { dropout_apply(la.fcproj, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_MLP), drop); }
        residual_forward(la.residual3, la.residual2, la.fcproj, BTC);
    }
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.residual3 + (size_t)(L - 1) * BTC,
                      p.lnfw, p.lnfb, (int)BT, C);
}

// The fused classifier over the N = B*T positions of acts.lnf, chunk of classifier_rows positions
// after chunk, in order: the chunk's logits = lnf @ wte^T (copied to saved_logits in parity
// mode), their softmax and loss (with targets), and with_backward the gradient written over them
// (softmax_crossentropy), then d(lnf) of the chunk's rows += dlogits @ wte and
// d(wte) += dlogits^T @ lnf of the chunk. Every parallel step inside a chunk writes disjoint
// outputs; across chunks d(wte) sums in chunk order. Gradients must be zeroed before. The argmax
// (the example accuracy's predictions) only with_argmax.
static void classifier_chunks(GPT2* model, const int* targets, int N, int with_argmax, int with_backward) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    ActivationTensors a = model->acts;
    const float* wte = classifier_weight(&model->params, cfg->untied_head);  // wte, or an untied lm_head
    float* dwte = classifier_weight(&model->grads, cfg->untied_head);
    for (int n0 = 0; n0 < N; n0 += model->classifier_rows) {
        int n = N - n0 < model->classifier_rows ? N - n0 : model->classifier_rows;
        const float* lnf = a.lnf + (size_t)n0 * C;
        matmul_forward(a.logits, lnf, wte, NULL, n, C, Vp);
        if (model->saved_logits) {
            memcpy(model->saved_logits + (size_t)n0 * Vp, a.logits, (size_t)n * Vp * sizeof(float));
        }
        if (targets == NULL) { continue; }
        softmax_crossentropy(a.losses + n0, with_argmax ? model->argmax + n0 : NULL, a.logits, targets + n0,
                             with_backward ? model->dloss + n0 : NULL, n, V, Vp);
        if (with_backward) {
            matmul_backward(model->grads_acts.lnf + (size_t)n0 * C, dwte, NULL, a.logits, lnf, wte,
                            n, C, Vp);
        }
    }
}

// Full forward. With targets: the loss (mean over all positions, or over mask == 1 positions when
// mask != NULL), the dloss weights and, with a mask, the example accuracy; with_backward also the
// classifier's gradients (d(lnf), and d(wte) accumulated), so the gradients must be zeroed first.
static void gpt2_forward(GPT2* model, const int* inputs, const int* targets, const int* mask, int B, int T,
                         int with_backward) {
    int N = B * T;
    gpt2_forward_trunk(model, inputs, B, T);
    size_t scored = targets != NULL ? loss_weights(model->dloss, mask, N) : 0;
    classifier_chunks(model, targets, N, mask != NULL, targets != NULL && with_backward);
    if (targets == NULL) { return; }
    model->loss = loss_summary(model->acts.losses, model->argmax, targets, mask, B, T, scored);
}

// Zeroes n floats with all threads (one memset of the ~70 MB of d4 gradients
// took ~15 ms on one core).
static void zero_floats(float* x, size_t n) {
    #pragma omp parallel if (n >= PAR_MIN_WORK)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        size_t i0 = n * (size_t)t / (size_t)nt, i1 = n * (size_t)(t + 1) / (size_t)nt;
        memset(x + i0, 0, (i1 - i0) * sizeof(float));
    }
}

static void gpt2_zero_grad(GPT2* model) {
    zero_floats(model->trained_grads, model->num_trained);
    zero_floats(model->grads_acts_memory, model->num_grad_acts);
}

// Gradients of the mean loss of the last gpt2_forward (with targets and with_backward, which
// did the classifier's part) with respect to all parameters, accumulated into model->grads.
static void gpt2_backward(GPT2* model, const int* inputs, int B, int T) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts, d = model->grads_acts;
    size_t BT = (size_t)B * T, BTC = BT * C, c = (size_t)C;
    float* dqkvb = cfg->no_qkv_bias ? NULL : g.qkvb;  // NULL also with LoRA (every g.* is NULL then)
    const DropoutConfig* drop = regularizer_dropout(&model->reg);
    const LoraConfig* lc = &model->lora;
    float scale = lc->rank > 0 ? lora_scale(lc) : 0.0f;
    int r = lc->rank;
    LoraTensors lp = model->lora_p, lg = model->lora_g;
    layernorm_backward(d.residual3 + (size_t)(L - 1) * BTC, g.lnfw, g.lnfb, d.lnf,
                       a.residual3 + (size_t)(L - 1) * BTC, p.lnfw, a.lnf_mean, a.lnf_rstd, (int)BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        float* dresidual = l == 0 ? d.encoded : d.residual3 + (size_t)(l - 1) * BTC;
        residual_backward(d.residual2 + l * BTC, d.fcproj + l * BTC, d.residual3 + l * BTC, BTC);
        if (drop) { dropout_apply(d.fcproj + l * BTC, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_MLP), drop); }
        matmul_backward(d.fch_gelu + l * BTC * 4, g.fcprojw ? g.fcprojw + l * 4 * c * c : NULL,
                        g.fcprojb ? g.fcprojb + l * c : NULL, d.fcproj + l * BTC, a.fch_gelu + l * BTC * 4,
                        p.fcprojw + l * 4 * c * c, (int)BT, 4 * C, C);
        if (lora_targets(lc, LORA_FCPROJW)) {
            lora_backward(d.fch_gelu + l * BTC * 4, lg.A[LORA_FCPROJW] + l * r * 4 * c, lg.B[LORA_FCPROJW] + l * c * r,
                          model->lora_du, d.fcproj + l * BTC, a.fch_gelu + l * BTC * 4, lora_u_of(model, LORA_FCPROJW, l),
                          lp.A[LORA_FCPROJW] + l * r * 4 * c, lp.B[LORA_FCPROJW] + l * c * r, scale, (int)BT, 4 * C, C, r);
        }
        gelu_backward(d.fch + l * BTC * 4, a.fch + l * BTC * 4, d.fch_gelu + l * BTC * 4, BTC * 4);
        matmul_backward(d.ln2 + l * BTC, g.fcw ? g.fcw + l * 4 * c * c : NULL, g.fcb ? g.fcb + l * 4 * c : NULL,
                        d.fch + l * BTC * 4, a.ln2 + l * BTC, p.fcw + l * 4 * c * c, (int)BT, C, 4 * C);
        if (lora_targets(lc, LORA_FCW)) {
            lora_backward(d.ln2 + l * BTC, lg.A[LORA_FCW] + l * r * c, lg.B[LORA_FCW] + l * 4 * c * r, model->lora_du,
                          d.fch + l * BTC * 4, a.ln2 + l * BTC, lora_u_of(model, LORA_FCW, l), lp.A[LORA_FCW] + l * r * c,
                          lp.B[LORA_FCW] + l * 4 * c * r, scale, (int)BT, C, 4 * C, r);
        }
        layernorm_backward(d.residual2 + l * BTC, g.ln2w ? g.ln2w + l * c : NULL, g.ln2b ? g.ln2b + l * c : NULL, d.ln2 + l * BTC,
                           a.residual2 + l * BTC, p.ln2w + l * c, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, (int)BT, C);
        residual_backward(dresidual, d.attproj + l * BTC, d.residual2 + l * BTC, BTC);
        if (drop) { dropout_apply(d.attproj + l * BTC, BTC, regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN_PROJ), drop); }
        matmul_backward(d.atty + l * BTC, g.attprojw ? g.attprojw + l * c * c : NULL,
                        g.attprojb ? g.attprojb + l * c : NULL, d.attproj + l * BTC, a.atty + l * BTC,
                        p.attprojw + l * c * c, (int)BT, C, C);
        if (lora_targets(lc, LORA_ATTPROJW)) {
            lora_backward(d.atty + l * BTC, lg.A[LORA_ATTPROJW] + l * r * c, lg.B[LORA_ATTPROJW] + l * c * r,
                          model->lora_du, d.attproj + l * BTC, a.atty + l * BTC, lora_u_of(model, LORA_ATTPROJW, l),
                          lp.A[LORA_ATTPROJW] + l * r * c, lp.B[LORA_ATTPROJW] + l * c * r, scale, (int)BT, C, C, r);
        }
        attention_backward(d.qkv + l * BTC * 3, d.atty + l * BTC, a.qkv + l * BTC * 3,
                           a.att + l * BT * NH * (size_t)T, model->att_scratch, drop,
                           drop ? regularizer_site_key(&model->reg, l, DROPOUT_SITE_ATTN) : 0, B, T, C, NH);
        matmul_backward(d.ln1 + l * BTC, g.qkvw ? g.qkvw + l * 3 * c * c : NULL, dqkvb ? dqkvb + l * 3 * c : NULL,
                        d.qkv + l * BTC * 3, a.ln1 + l * BTC, p.qkvw + l * 3 * c * c, (int)BT, C, 3 * C);
        if (lora_targets(lc, LORA_QKVW)) {
            lora_backward(d.ln1 + l * BTC, lg.A[LORA_QKVW] + l * r * c, lg.B[LORA_QKVW] + l * 3 * c * r, model->lora_du,
                          d.qkv + l * BTC * 3, a.ln1 + l * BTC, lora_u_of(model, LORA_QKVW, l), lp.A[LORA_QKVW] + l * r * c,
                          lp.B[LORA_QKVW] + l * 3 * c * r, scale, (int)BT, C, 3 * C, r);
        }
        layernorm_backward(dresidual, g.ln1w ? g.ln1w + l * c : NULL, g.ln1b ? g.ln1b + l * c : NULL, d.ln1 + l * BTC, residual,
                           p.ln1w + l * c, a.ln1_mean + l * BT, a.ln1_rstd + l * BT, (int)BT, C);
    }
    if (g.wte == NULL) { return; }  // LoRA: the embeddings are frozen
    if (drop) { dropout_apply(d.encoded, BTC, regularizer_site_key(&model->reg, -1, DROPOUT_SITE_EMBED), drop); }
    encoder_backward(g.wte, g.wpe, d.encoded, inputs, B, T, C);
}

// sqrt(sum of squares) of n floats, in double, over fixed chunks summed in
// chunk order: the result does not depend on the thread count.
#define NORM_CHUNKS 64
static double vector_norm(const float* x, size_t n) {
    double partial[NORM_CHUNKS];
    #pragma omp parallel for if (n >= PAR_MIN_WORK)
    for (int ch = 0; ch < NORM_CHUNKS; ch++) {
        size_t i0 = n * (size_t)ch / NORM_CHUNKS, i1 = n * (size_t)(ch + 1) / NORM_CHUNKS;
        double s = 0.0;
        for (size_t i = i0; i < i1; i++) { s += (double)x[i] * (double)x[i]; }
        partial[ch] = s;
    }
    double total = 0.0;
    for (int ch = 0; ch < NORM_CHUNKS; ch++) { total += partial[ch]; }
    return sqrt(total);
}

// One AdamW step t (1-based) with learning rate lr on grads * grad_scale.
// Per parameter, with wd = weight_decay for the tensors that decay, else 0:
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// which is p - lr (m_hat / (sqrt(v_hat) + eps) + wd p), in torch.optim.AdamW's
// order of operations. With decay toward the initialization p0 (the
// parameters before step 1) the decay term is p - (lr wd)(p - p0) instead of
// p (1 - lr wd). qkvb is skipped when the model has no QKV bias.
// One tensor's AdamW update (n floats; p0 NULL: decay toward zero).
static void adamw_tensor(float* p, const float* g, float* m, float* v, const float* p0, size_t n,
                         const AdamWSettings* s, AdamWScalars a, float decay, float lr_wd, float grad_scale) {
    float step_size = a.step_size, b2s = a.bias2_sqrt;
    #pragma omp parallel for if (n >= PAR_MIN_WORK)
    for (size_t j = 0; j < n; j++) {
        float grad = g[j] * grad_scale;
        float mj = s->beta1 * m[j] + (1.0f - s->beta1) * grad;
        float vj = s->beta2 * v[j] + (1.0f - s->beta2) * grad * grad;
        m[j] = mj;
        v[j] = vj;
        float pj = p0 ? p[j] - lr_wd * (p[j] - p0[j]) : p[j] * decay;
        p[j] = pj - step_size * (mj / (sqrtf(vj) / b2s + s->eps));
    }
}

static void gpt2_adamw_update(GPT2* model, const AdamWSettings* s, float lr, float grad_scale, int t) {
    AdamWScalars a = adamw_step_scalars(s, lr, t);
    if (model->lora.rank > 0) {  // the adapters only: every one a matrix, all decay
        float decay, lr_wd;
        adamw_adapter_decay(s, lr, &decay, &lr_wd);
        adamw_tensor(model->lora_memory, model->lora_grads_memory, model->m_memory, model->v_memory, NULL,
                     model->lora.total, s, a, decay, lr_wd, grad_scale);
        return;
    }
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        float decay, lr_wd;
        if (!adamw_tensor_decay(s, &model->config, i, lr, &decay, &lr_wd)) { offset += n; continue; }
        const float* p0 = s->decay_toward_init ? model->init_params + offset : NULL;
        adamw_tensor(model->params_memory + offset, model->grads_memory + offset, model->m_memory + offset,
                     model->v_memory + offset, p0, n, s, a, decay, lr_wd, grad_scale);
        offset += n;
    }
}

// Weight noise of training step `step`: params[j] += weight_noise_at(key, j) over
// the spans of llmc/regularizers.h (not wte's padded rows, not a disabled qkvb).
static void add_weight_noise(GPT2* model, float sigma, int step) {
    uint64_t key = noise_key(model->reg.seed, step);
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = weight_noise_span(&model->config, i, model->param_sizes[i]);
        float* p = model->params_memory + offset;
        #pragma omp parallel for if (n >= PAR_MIN_WORK)
        for (size_t j = 0; j < n; j++) { p[j] += weight_noise_at(key, offset + j, sigma); }
        offset += model->param_sizes[i];
    }
}

// Forward and backward of training step `step` on one batch (loss, dlogits,
// gradients), with the step's dropout masks when --dropout > 0 and at noisy
// weights when weight_noise > 0: the clean parameters are kept aside, noise is
// added, forward and backward run, and the clean parameters come back, so
// the update (and the weight decay) applies to the clean weights.
static void gpt2_forward_backward_step(GPT2* model, const int* inputs, const int* targets, const int* mask,
                                       int B, int T, int step, float weight_noise) {
    if (weight_noise > 0.0f) {
        memcpy(model->clean_params, model->params_memory, model->num_parameters * sizeof(float));
        add_weight_noise(model, weight_noise, step);
    }
    model->reg.step = step;
    gpt2_zero_grad(model);
    gpt2_forward(model, inputs, targets, mask, B, T, 1);
    gpt2_backward(model, inputs, B, T);
    model->reg.step = 0;
    if (weight_noise > 0.0f) {
        memcpy(model->params_memory, model->clean_params, model->num_parameters * sizeof(float));
    }
}

// ----------------------------------------------------------------------------
// sampling

// Logits (Vp) of the position after tokens[0..n-1], using at most the last
// model->T tokens (a sliding window when the sample grows longer).
static const float* gpt2_next_token_logits(GPT2* model, const int* tokens, int n) {
    int start = n > model->T ? n - model->T : 0;
    int len = n - start;
    gpt2_forward_trunk(model, tokens + start, 1, len);
    int C = model->config.channels, Vp = model->config.padded_vocab_size;
    const float* x = model->acts.lnf + (size_t)(len - 1) * C;
    float* out = model->acts.logits;
    const float* wte = classifier_weight(&model->params, model->config.untied_head);
    #pragma omp parallel for if ((size_t)Vp * C >= PAR_MIN_WORK)
    for (int v = 0; v < Vp; v++) {
        const float* w = wte + (size_t)v * C;
        float val = 0.0f;
        for (int i = 0; i < C; i++) { val += x[i] * w[i]; }
        out[v] = val;
    }
    return out;
}

// ----------------------------------------------------------------------------
// main

static void cpu_model_name(char* buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE* fp = fopen("/proc/cpuinfo", "r");
    if (!fp) { return; }
    char line[512];
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, "model name", 10) == 0) {
            char* colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ') { colon++; }
                size_t len = strlen(colon);
                while (len > 0 && (colon[len - 1] == '\n' || colon[len - 1] == ' ')) { colon[--len] = '\0'; }
                snprintf(buf, n, "%s", colon);
            }
            break;
        }
    }
    fclose(fp);
}

// "OpenBLAS 0.3.x ... kernel Haswell (scipy-openblas32 wheel)": the library and the kernel it
// picked at run time (OPENBLAS_CORETYPE or the CPU), since kernels round differently.
static const char* blas_name(void) {
#ifdef USE_BLAS
    static char name[200];
    if (!name[0]) {
        char config[120];
        snprintf(config, sizeof(config), "%s", openblas_get_config());
        char* sp = strchr(config, ' ');  // "OpenBLAS 0.3.30 DYNAMIC_ARCH ...": keep name and version
        if (sp && strchr(sp + 1, ' ')) { *strchr(sp + 1, ' ') = '\0'; }
        snprintf(name, sizeof(name), "%s, kernel %s%s", config, openblas_get_corename(),
#ifdef BLAS_SCIPY_PREFIX
                 " (scipy-openblas32 wheel)"
#else
                 ""
#endif
                 );
    }
    return name;
#else
    return "none (plain C loops)";
#endif
}

// ---- the backend of llmc/train_driver.h: this file's model behind the shared training run

static void cpu_configure(const TrainConfig* cfg) {
    if (cfg->threads > 0) {
#ifdef _OPENMP
        omp_set_num_threads(cfg->threads);
#else
        if (cfg->threads > 1) { warn("built without OpenMP: --threads %d runs on 1 thread", cfg->threads); }
#endif
    }
#ifdef USE_BLAS
    openblas_set_num_threads(1); // OpenBLAS runs inside our OpenMP threads (see sgemm_tiled)
#endif
}

static void* cpu_load(const char* path, const GPT2Config** config, size_t* num_parameters, const float** params) {
    GPT2* model = (GPT2*)mallocCheck(sizeof(GPT2));
    gpt2_build_from_checkpoint(model, path);
    *config = &model->config;
    *num_parameters = model->num_parameters;
    *params = model->params_memory;
    return model;
}

// Refuses what cannot fit in memory before any data is read or buffer allocated.
static void cpu_prepare(void* m, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits,
                        const char* model_path) {
    GPT2* model = (GPT2*)m;
    char what[160];
    snprintf(what, sizeof(what), "training model %s (%zu parameters) with B=%d T=%d", model_path,
             model->num_parameters, B, T);
    model->classifier_rows = classifier_chunk_rows(cfg->classifier_rows, model->config.padded_vocab_size,
                                                   CPU_CLASSIFIER_FLOATS);
    int param_copies = 3 + (cfg->weight_noise > 0.0f) + cfg->decay_toward_init;  // params, grads, m, v, ...
    require_memory(gpt2_memory_bytes(model, lora, B, T, keep_logits, param_copies), what,
                   "Use a smaller -b or -t, or a smaller model.");
}

static void cpu_allocate(void* m, const TrainConfig* cfg, const LoraConfig* lora, int B, int T, int keep_logits) {
    GPT2* model = (GPT2*)m;
    size_t bytes = model->num_parameters * sizeof(float);
    gpt2_allocate(model, lora, B, T, keep_logits);
    model->reg.seed = (uint64_t)cfg->seed;
    model->reg.dropout = dropout_config(cfg->dropout);
    if (cfg->weight_noise > 0.0f) { model->clean_params = (float*)mallocCheck(bytes); }
    if (cfg->decay_toward_init) {
        // the parameters before step 1; a resumed run reads them from its state file
        model->init_params = (float*)mallocCheck(bytes);
        memcpy(model->init_params, model->params_memory, bytes);
    }
}

static void cpu_print_rows(void* m) {
    (void)m;
    print_row("threads", "%d (OpenMP%s)", num_threads(),
#ifdef _OPENMP
              ""
#else
              " not compiled in"
#endif
              );
    print_row("BLAS", "%s", blas_name());
}

static void cpu_log_config(void* m, Json* j) {
    (void)m;
    json_key_int(j, "threads", num_threads());
    json_key_string(j, "blas", blas_name());
}

static void cpu_hardware(void* m, char* buf, size_t n) {
    (void)m;
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    snprintf(buf, n, "%s, %d threads", cpu, num_threads());
}

static LossSummary cpu_forward(void* m, const int* inputs, const int* targets, const int* mask, int B, int T) {
    GPT2* model = (GPT2*)m;
    gpt2_forward(model, inputs, targets, mask, B, T, 0);
    return model->loss;
}

static LossSummary cpu_forward_backward(void* m, const int* inputs, const int* targets, const int* mask, int B,
                                       int T, int step, float weight_noise) {
    GPT2* model = (GPT2*)m;
    gpt2_forward_backward_step(model, inputs, targets, mask, B, T, step, weight_noise);
    return model->loss;
}

static double cpu_grad_norm(void* m) {
    GPT2* model = (GPT2*)m;
    return vector_norm(model->trained_grads, model->num_trained);
}

static void cpu_update(void* m, const AdamWSettings* opt, float lr, float grad_scale, int t) {
    gpt2_adamw_update((GPT2*)m, opt, lr, grad_scale, t);
}

static double cpu_param_norm(void* m) {
    GPT2* model = (GPT2*)m;
    return vector_norm(model->trained, model->num_trained);
}

static const float* cpu_next_token_logits(void* m, const int* tokens, int n) {
    return gpt2_next_token_logits((GPT2*)m, tokens, n);
}

static void cpu_parity_outputs(void* m, const float** logits, const float** grads) {
    GPT2* model = (GPT2*)m;
    *logits = model->saved_logits;
    *grads = model->trained_grads;
}

// att of the last forward, layer after layer, with the entries above the diagonal (which the
// loops never write) set to zero.
static const float* cpu_attention_weights(void* m) {
    GPT2* model = (GPT2*)m;
    const GPT2Config* cfg = &model->config;
    size_t L = (size_t)cfg->num_layers, NH = (size_t)cfg->num_heads, B = (size_t)model->B, T = (size_t)model->T;
    size_t n = L * B * NH * T * T;
    if (!model->att_out) { model->att_out = (float*)mallocCheck(n * sizeof(float)); }
    for (size_t row = 0; row < n / T; row++) {  // row = ((l, b, h), t)
        size_t t = row % T;
        const float* src = model->acts.att + row * T;
        float* dst = model->att_out + row * T;
        for (size_t t2 = 0; t2 < T; t2++) { dst[t2] = t2 <= t ? src[t2] : 0.0f; }
    }
    return model->att_out;
}

static HostTensors cpu_host_tensors(void* m, int download) {
    (void)download; // the CPU's tensors are the host's
    GPT2* model = (GPT2*)m;
    HostTensors h = {model->params_memory, model->m_memory, model->v_memory, model->init_params, model->lora_memory};
    return h;
}

static void cpu_upload_state(void* m) { (void)m; }

static void cpu_destroy(void* m) {
    gpt2_free((GPT2*)m);
    free(m);
}

int main(int argc, char** argv) {
    static const TrainerBackend cpu = {
        "train_gpt2", "", NULL, 0, cpu_configure, cpu_load, cpu_prepare, cpu_allocate, cpu_print_rows,
        cpu_log_config, cpu_hardware, cpu_forward, cpu_forward_backward, cpu_grad_norm, cpu_update,
        cpu_param_norm, cpu_next_token_logits, cpu_parity_outputs, cpu_attention_weights, cpu_host_tensors, cpu_upload_state, cpu_destroy,
    };
    return train_main(argc, argv, &cpu);
}
