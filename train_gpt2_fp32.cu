/*
train_gpt2_fp32.cu: the fp32 CUDA trainer for GPT-2 (cuBLAS for the matmuls).

It takes the same flags, parity files, log, checkpoints and training-state files
as train_gpt2.c (the CPU reference): both share llmc/ for everything that is not
a layer or the main loop, so a run started on one trainer resumes on the other.
This file holds the kernels, the GPU model and the main loop; each kernel is the
winning version of its workbench in dev/cuda/, named where it is defined.

Rules the code follows:
- Parameter gradients ACCUMULATE (+=); the step zeroes them first. Activation
  gradients live in three one-layer buffers reused by every layer (dresidual,
  dbuf (B,T,C), dbuf4 (B,T,4C)): matmul_backward WRITES dinp (=); layernorm_backward
  ADDS into dresidual, the gradient of the residual stream, so residual adds need
  no backward kernel; gelu_backward and attention_backward WRITE. The classifier
  writes dlogits over the logits in place (as the CPU trainer does).
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
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "llmc/args.h"
#include "llmc/checkpoint.h"
#include "llmc/dataloader.h"
#include "llmc/gpt2_params.h"
#include "llmc/logger.h"
#include "llmc/parity.h"
#include "llmc/rand.h"
#include "llmc/regularizers.h"
#include "llmc/sampler.h"
#include "llmc/schedule.h"
#include "llmc/tokenizer.h"
#include "llmc/train_config.h"
#include "llmc/train_driver.h"
#include "llmc/train_state.h"
#include "llmc/utils.h"


// ----------------------------------------------------------------------------
// checked CUDA and cuBLAS calls

static void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        fflush(stdout);
        fprintf(stderr, "error: CUDA error at %s:%d: %s\n  (call: %s)\n", file, line, cudaGetErrorString(err), what);
        if (err == cudaErrorNoKernelImageForDevice) {
            fprintf(stderr, "  this binary has no code for this GPU: rebuild for it with "
                    "rm -f train_gpt2fp32cu && make train_gpt2fp32cu GPU_ARCHS=sm_XY (XY = its compute capability)\n");
        }
        exit(1);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
#define launchCheck() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static void cublas_check(cublasStatus_t st, const char* what, const char* file, int line) {
    if (st != CUBLAS_STATUS_SUCCESS) {
        fflush(stdout);
        fprintf(stderr, "error: cuBLAS error %d at %s:%d\n  (call: %s)\n", (int)st, file, line, what);
        exit(1);
    }
}
#define cublasCheck(call) cublas_check((call), #call, __FILE__, __LINE__)

// cudaMalloc that explains an out-of-memory failure: the size asked for, what
// the GPU has, and what to change.
static void* gpu_malloc(size_t bytes, const char* what, const char* file, int line) {
    void* p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (err != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();  // clear the error so the query below works
        cudaMemGetInfo(&free_b, &total_b);
        fflush(stdout);
        fprintf(stderr, "error: cannot allocate %.1f MiB of GPU memory for %s (%s); the GPU has %.1f MiB free "
                "of %.1f MiB. Use a smaller batch (-b) or sequence length (-t).\n  (at %s:%d)\n",
                bytes / 1048576.0, what, cudaGetErrorString(err), free_b / 1048576.0, total_b / 1048576.0, file, line);
        exit(1);
    }
    return p;
}
#define gpuMalloc(bytes, what) gpu_malloc((bytes), (what), __FILE__, __LINE__)

static inline int ceil_div(size_t a, size_t b) { return (int)((a + b - 1) / b); }

// ----------------------------------------------------------------------------
// device helpers

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_double(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}

// ----------------------------------------------------------------------------
// encoder (dev/cuda/encoder_forward.cu v2 with v1 for C % 4 != 0;
//          dev/cuda/encoder_backward.cu v2, deterministic)

__global__ void encoder_forward_kernel(float* out, const int* inp, const float* wte, const float* wpe,
                                       int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    size_t bt = idx / C;
    int c = (int)(idx % C);
    int t = (int)(bt % T);
    out[idx] = wte[(size_t)inp[bt] * C + c] + wpe[(size_t)t * C + c];
}

__global__ void encoder_forward_kernel4(float4* out, const int* inp, const float4* wte, const float4* wpe,
                                        int B, int T, int C) {
    int C4 = C / 4;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C4) return;
    size_t bt = idx / C4;
    int c4 = (int)(idx % C4);
    int t = (int)(bt % T);
    float4 we = wte[(size_t)inp[bt] * C4 + c4];
    float4 pe = wpe[(size_t)t * C4 + c4];
    out[idx] = make_float4(we.x + pe.x, we.y + pe.y, we.z + pe.z, we.w + pe.w);
}

static void encoder_forward(float* out,                          // (B, T, C)
                            const int* inp,                      // (B, T) device
                            const float* wte, const float* wpe,  // (Vp, C), (maxT, C)
                            int B, int T, int C) {
    const int block = 256;
    if (C % 4 == 0) {
        encoder_forward_kernel4<<<ceil_div((size_t)B * T * C / 4, block), block>>>(
            (float4*)out, inp, (const float4*)wte, (const float4*)wpe, B, T, C);
    } else {
        encoder_forward_kernel<<<ceil_div((size_t)B * T * C, block), block>>>(out, inp, wte, wpe, B, T, C);
    }
    launchCheck();
}

// dwpe[t,c] += sum_b dout[b,t,c], b in order
__global__ void wpe_backward_kernel(float* dwpe, const float* dout, int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)T * C) return;
    float sum = 0.0f;
    for (int b = 0; b < B; b++) sum += dout[(size_t)b * T * C + idx];
    dwpe[idx] += sum;
}

// dwte[token u,c] += the rows of dout at bucket u's positions, in position order
__global__ void wte_backward_kernel(float* dwte, const float* dout, const int* bucket_token,
                                    const int* bucket_start, const int* bucket_pos, int C) {
    int u = blockIdx.x;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sum = 0.0f;
    for (int i = bucket_start[u]; i < bucket_start[u + 1]; i++) sum += dout[(size_t)bucket_pos[i] * C + c];
    dwte[(size_t)bucket_token[u] * C + c] += sum;
}

typedef struct {
    int *token, *start, *pos, *count;  // host: (BT), (BT+1), (BT), (Vp) zeroed
    int *d_token, *d_start, *d_pos;    // device copies
} EncoderBuckets;

// Groups the B*T positions by token id (counting sort); returns the number of buckets.
static int encoder_buckets(EncoderBuckets* bk, const int* inp, int BT, int Vp) {
    for (int i = 0; i < BT; i++) bk->count[inp[i]]++;
    int num = 0, offset = 0;
    for (int v = 0; v < Vp; v++) {
        if (bk->count[v] == 0) continue;
        bk->token[num] = v;
        bk->start[num] = offset;
        offset += bk->count[v];
        bk->count[v] = bk->start[num];  // next write slot for token v
        num++;
    }
    bk->start[num] = offset;
    for (int i = 0; i < BT; i++) bk->pos[bk->count[inp[i]]++] = i;
    for (int u = 0; u < num; u++) bk->count[bk->token[u]] = 0;
    return num;
}

static void encoder_backward(float* dwte, float* dwpe,  // (Vp, C), (maxT, C)
                             const float* dout,         // (B, T, C)
                             const int* inp_host,       // (B, T) host
                             EncoderBuckets* bk, int B, int T, int C, int Vp) {
    const int block = 256;
    wpe_backward_kernel<<<ceil_div((size_t)T * C, block), block>>>(dwpe, dout, B, T, C);
    launchCheck();
    int num = encoder_buckets(bk, inp_host, B * T, Vp);
    cudaCheck(cudaMemcpy(bk->d_token, bk->token, (size_t)num * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(bk->d_start, bk->start, ((size_t)num + 1) * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(bk->d_pos, bk->pos, (size_t)B * T * sizeof(int), cudaMemcpyHostToDevice));
    dim3 grid(num, ceil_div(C, block));
    wte_backward_kernel<<<grid, block>>>(dwte, dout, bk->d_token, bk->d_start, bk->d_pos, C);
    launchCheck();
}

// ----------------------------------------------------------------------------
// LayerNorm (dev/cuda/layernorm_forward.cu v2, layernorm_backward.cu v2)

#define LN_EPS 1e-5f
#define ROWS_PER_CHUNK 256  // rows per partial sum in the two-stage column reductions

// warp per row
__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int N, int C) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= N) return;  // uniform per warp
    const float* x = inp + (size_t)r * C;
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32) sum += x[c];
    float m = warp_sum(sum) / C;
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = x[c] - m; sq += d * d; }
    float s = 1.0f / sqrtf(warp_sum(sq) / C + LN_EPS);
    float* o = out + (size_t)r * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) { mean[r] = m; rstd[r] = s; }
}

static void layernorm_forward(float* out, float* mean, float* rstd,  // (N, C), (N), (N)
                              const float* inp,                     // (N, C)
                              const float* weight, const float* bias, // (C), (C)
                              int N, int C) {
    const int block = 256;
    layernorm_forward_kernel<<<ceil_div(N, block / 32), block>>>(out, mean, rstd, inp, weight, bias, N, C);
    launchCheck();
}

// dinp += ..., warp per row
__global__ void layernorm_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                      const float* mean, const float* rstd, int N, int C) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= N) return;
    const float* x = inp + (size_t)r * C;
    const float* d = dout + (size_t)r * C;
    float m = mean[r], s = rstd[r];
    float a = 0.0f, b = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * s;
        float dn = weight[c] * d[c];
        a += dn;
        b += dn * n;
    }
    a = warp_sum(a) / C;
    b = warp_sum(b) / C;
    float* g = dinp + (size_t)r * C;
    for (int c = lane; c < C; c += 32) {
        float n = (x[c] - m) * s;
        g[c] += s * (weight[c] * d[c] - a - n * b);
    }
}

// partial (num_chunks, 2, C): [chunk][0] dweight part, [chunk][1] dbias part; block (32, ny)
__global__ void layernorm_params_partial_kernel(float* partial, const float* dout, const float* inp,
                                                const float* mean, const float* rstd, int N, int C) {
    extern __shared__ float sh[];  // 2 * 32 * ny floats
    int tx = threadIdx.x, ty = threadIdx.y, ny = blockDim.y;
    int c = blockIdx.x * 32 + tx;
    int r0 = blockIdx.y * ROWS_PER_CHUNK;
    int r1 = min(N, r0 + ROWS_PER_CHUNK);
    float dw = 0.0f, db = 0.0f;
    if (c < C) {
        for (int r = r0 + ty; r < r1; r += ny) {
            float d = dout[(size_t)r * C + c];
            dw += (inp[(size_t)r * C + c] - mean[r]) * rstd[r] * d;
            db += d;
        }
    }
    sh[ty * 32 + tx] = dw;
    sh[(ny + ty) * 32 + tx] = db;
    __syncthreads();
    if (ty == 0 && c < C) {
        float sw = 0.0f, sb = 0.0f;
        for (int y = 0; y < ny; y++) { sw += sh[y * 32 + tx]; sb += sh[(ny + y) * 32 + tx]; }
        partial[((size_t)blockIdx.y * 2 + 0) * C + c] = sw;
        partial[((size_t)blockIdx.y * 2 + 1) * C + c] = sb;
    }
}

__global__ void layernorm_params_final_kernel(float* dweight, float* dbias, const float* partial, int num_chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int k = 0; k < num_chunks; k++) {
        sw += partial[((size_t)k * 2 + 0) * C + c];
        sb += partial[((size_t)k * 2 + 1) * C + c];
    }
    dweight[c] += sw;
    dbias[c] += sb;
}

// dinp, dweight, dbias all accumulate (+=). scratch: 2 * ceil(N/256) * C floats.
static void layernorm_backward(float* dinp, float* dweight, float* dbias,  // (N, C), (C), (C)
                               float* scratch,
                               const float* dout, const float* inp,        // (N, C), (N, C)
                               const float* weight,                        // (C)
                               const float* mean, const float* rstd,       // (N), (N)
                               int N, int C) {
    const int block = 256;
    layernorm_dinp_kernel<<<ceil_div(N, block / 32), block>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    launchCheck();
    int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
    dim3 pblock(32, block / 32), pgrid(ceil_div(C, 32), num_chunks);
    layernorm_params_partial_kernel<<<pgrid, pblock, 2 * block * sizeof(float)>>>(scratch, dout, inp, mean, rstd, N, C);
    launchCheck();
    layernorm_params_final_kernel<<<ceil_div(C, block), block>>>(dweight, dbias, scratch, num_chunks, C);
    launchCheck();
}

// ----------------------------------------------------------------------------
// matmul: cuBLAS, bias kernels (dev/cuda/matmul_backward_bias.cu v2)

// out[r, c] += bias[c]
__global__ void add_bias_kernel(float* out, const float* bias, size_t N, int OC) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * OC) return;
    out[idx] += bias[idx % OC];
}

// partial (num_chunks, OC); block (32, ny)
__global__ void bias_partial_kernel(float* partial, const float* dout, int N, int OC) {
    extern __shared__ float sh[];  // 32 * ny floats
    int tx = threadIdx.x, ty = threadIdx.y, ny = blockDim.y;
    int c = blockIdx.x * 32 + tx;
    int r0 = blockIdx.y * ROWS_PER_CHUNK;
    int r1 = min(N, r0 + ROWS_PER_CHUNK);
    float s = 0.0f;
    if (c < OC) {
        for (int r = r0 + ty; r < r1; r += ny) s += dout[(size_t)r * OC + c];
    }
    sh[ty * 32 + tx] = s;
    __syncthreads();
    if (ty == 0 && c < OC) {
        float t = 0.0f;
        for (int y = 0; y < ny; y++) t += sh[y * 32 + tx];
        partial[(size_t)blockIdx.y * OC + c] = t;
    }
}

__global__ void bias_final_kernel(float* dbias, const float* partial, int num_chunks, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s = 0.0f;
    for (int k = 0; k < num_chunks; k++) s += partial[(size_t)k * OC + c];
    dbias[c] += s;
}

static cublasHandle_t g_cublas;

// out = inp @ weight^T + bias. Row-major (N, OC) is column-major (OC, N):
// out^T = weight (as column-major (IC, OC))^T @ inp^T.
static void matmul_forward(float* out,                              // (N, OC)
                           const float* inp,                        // (N, IC)
                           const float* weight, const float* bias,  // (OC, IC), (OC) or NULL
                           int N, int IC, int OC) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, weight, IC, inp, IC, &zero, out, OC));
    if (bias != NULL) {
        const int block = 256;
        add_bias_kernel<<<ceil_div((size_t)N * OC, block), block>>>(out, bias, (size_t)N, OC);
        launchCheck();
    }
}

// dinp = dout @ weight (WRITTEN); dweight += dout^T @ inp; dbias += column sums of dout.
// scratch: ceil(N/256) * OC floats when dbias != NULL.
static void matmul_backward(float* dinp, float* dweight, float* dbias,  // (N, IC), (OC, IC), (OC) or NULL
                            float* scratch,
                            const float* dout,                          // (N, OC)
                            const float* inp, const float* weight,      // (N, IC), (OC, IC)
                            int N, int IC, int OC) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, weight, IC, dout, OC, &zero, dinp, IC));
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, IC, dout, OC, &one, dweight, IC));
    if (dbias != NULL) {
        const int block = 256;
        int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
        dim3 pblock(32, block / 32), pgrid(ceil_div(OC, 32), num_chunks);
        bias_partial_kernel<<<pgrid, pblock, block * sizeof(float)>>>(scratch, dout, N, OC);
        launchCheck();
        bias_final_kernel<<<ceil_div(OC, block), block>>>(dbias, scratch, num_chunks, OC);
        launchCheck();
    }
}

// ----------------------------------------------------------------------------
// attention, version 1: cuBLAS products + softmax kernels
// (dev/cuda/attention_forward.cu and attention_backward.cu, version 1)

// qkv (B,T,3C) -> q, k, v (B,NH,T,HS)
__global__ void permute_qkv_kernel(float* q, float* k, float* v, const float* qkv, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * HS) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    int C = NH * HS;
    size_t src = ((size_t)b * T + t) * 3 * C + (size_t)h * HS + d;
    q[idx] = qkv[src];
    k[idx] = qkv[src + C];
    v[idx] = qkv[src + 2 * C];
}

// y (B,NH,T,HS) -> out (B,T,C)
__global__ void merge_heads_kernel(float* out, const float* y, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * HS) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    out[((size_t)b * T + t) * NH * HS + (size_t)h * HS + d] = y[idx];
}

// x (B,T,C) -> y (B,NH,T,HS)
__global__ void split_heads_kernel(float* y, const float* x, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * HS) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    y[idx] = x[((size_t)b * T + t) * NH * HS + (size_t)h * HS + d];
}

// dq, dk, dv (B,NH,T,HS) -> dqkv (B,T,3C)
__global__ void merge_qkv_kernel(float* dqkv, const float* dq, const float* dk, const float* dv,
                                 int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * HS) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    int C = NH * HS;
    size_t dst = ((size_t)b * T + t) * 3 * C + (size_t)h * HS + d;
    dqkv[dst] = dq[idx];
    dqkv[dst + C] = dk[idx];
    dqkv[dst + 2 * C] = dv[idx];
}

// Causal softmax of each row (b,h,t) of att in place, entries s > t set to 0;
// lse[row] = log-sum-exp (when lse != NULL). Warp per row.
__global__ void softmax_causal_kernel(float* att, float* lse, int num_rows, int T) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= num_rows) return;
    int t = row % T;
    float* x = att + (size_t)row * T;
    float mx = -FLT_MAX;
    for (int s = lane; s <= t; s += 32) mx = fmaxf(mx, x[s]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int s = lane; s <= t; s += 32) sum += expf(x[s] - mx);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (int s = lane; s < T; s += 32) x[s] = (s <= t) ? expf(x[s] - mx) * inv : 0.0f;
    if (lse != NULL && lane == 0) lse[row] = mx + logf(sum);
}

// datt[row][s] <- att[s] * (g[s] - sum_u att[u] g[u]) for s <= t, 0 above, with g = datt
// (threshold == 0: no dropout) or g = datt * D (the dropout factor of att[row][s], llmc/regularizers.h,
// whose gradient this is). Warp per row.
__global__ void softmax_causal_backward_kernel(float* datt, const float* att, int num_rows, int T,
                                               uint64_t drop_key, uint32_t threshold, float scale) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= num_rows) return;
    int t = row % T;
    const float* a = att + (size_t)row * T;
    float* g = datt + (size_t)row * T;
    if (threshold > 0) {
        // each lane scales the entries it reads below: no exchange between lanes
        for (int s = lane; s <= t; s += 32) g[s] *= dropout_factor(drop_key, (size_t)row * T + s, threshold, scale);
    }
    float dot = 0.0f;
    for (int s = lane; s <= t; s += 32) dot += a[s] * g[s];
    dot = warp_sum(dot);
    for (int s = lane; s < T; s += 32) g[s] = (s <= t) ? a[s] * (g[s] - dot) : 0.0f;
}

// out[i] = in[i] * D_i, D_i = dropout_factor(key, i) (llmc/regularizers.h); out may alias in.
// The forward pass of a dropout site, and the backward pass on that site's gradient.
__global__ void dropout_kernel(float* out, const float* in, size_t n, uint64_t key, uint32_t threshold, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i] * dropout_factor(key, i, threshold, scale);
}

static void dropout_apply(float* out, const float* in, size_t n, uint64_t key, const DropoutConfig* d) {
    const int block = 256;
    dropout_kernel<<<ceil_div(n, block), block>>>(out, in, n, key, d->threshold, d->scale);
    launchCheck();
}

typedef struct {
    float *q, *k, *v, *y, *dq, *dk, *dv;  // (B, NH, T, HS) each
    float *att, *datt;                    // (B, NH, T, T) each
} AttentionCublasScratch;

// With dropout (drop != NULL) the softmaxed weights are multiplied by their dropout factors in
// place before the product with V; lse is of the weights before dropout.
static void attention_forward_cublas(float* out, float* lse, const float* qkv, AttentionCublasScratch* s,
                                     const DropoutConfig* drop, uint64_t drop_key, int B, int T, int NH, int HS) {
    const int block = 256;
    size_t N = (size_t)B * NH * T * HS;
    long long sTH = (long long)T * HS, sTT = (long long)T * T;
    int batch = B * NH, rows = B * NH * T;
    const float scale = 1.0f / sqrtf((float)HS), one = 1.0f, zero = 0.0f;
    permute_qkv_kernel<<<ceil_div(N, block), block>>>(s->q, s->k, s->v, qkv, B, T, NH, HS);
    launchCheck();
    // att^T (column-major T x T) = k (HS x T)^T @ q (HS x T), scaled
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, HS, &scale,
                                          s->k, HS, sTH, s->q, HS, sTH, &zero, s->att, T, sTT, batch));
    softmax_causal_kernel<<<ceil_div(rows, block / 32), block>>>(s->att, lse, rows, T);
    launchCheck();
    if (drop) dropout_apply(s->att, s->att, (size_t)rows * T, drop_key, drop);
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, HS, T, T, &one,
                                          s->v, HS, sTH, s->att, T, sTT, &zero, s->y, HS, sTH, batch));
    merge_heads_kernel<<<ceil_div(N, block), block>>>(out, s->y, B, T, NH, HS);
    launchCheck();
}

// With dropout: dv = (att D)^T dy, with att D formed in the datt buffer before datt = dy v^T
// overwrites it; the softmax backward applies D to datt (the gradient of att D) itself.
static void attention_backward_cublas(float* dqkv, const float* dout, const float* qkv, AttentionCublasScratch* s,
                                      const DropoutConfig* drop, uint64_t drop_key, int B, int T, int NH, int HS) {
    const int block = 256;
    size_t N = (size_t)B * NH * T * HS;
    long long sTH = (long long)T * HS, sTT = (long long)T * T;
    int batch = B * NH, rows = B * NH * T;
    const float scale = 1.0f / sqrtf((float)HS), one = 1.0f, zero = 0.0f;
    permute_qkv_kernel<<<ceil_div(N, block), block>>>(s->q, s->k, s->v, qkv, B, T, NH, HS);
    launchCheck();
    split_heads_kernel<<<ceil_div(N, block), block>>>(s->y, dout, B, T, NH, HS);  // y holds dy
    launchCheck();
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, HS, &scale,
                                          s->k, HS, sTH, s->q, HS, sTH, &zero, s->att, T, sTT, batch));
    softmax_causal_kernel<<<ceil_div(rows, block / 32), block>>>(s->att, NULL, rows, T);
    launchCheck();
    const float* att_used = s->att;  // the weights that multiplied V in the forward pass
    if (drop) {
        dropout_apply(s->datt, s->att, (size_t)rows * T, drop_key, drop);
        att_used = s->datt;
    }
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, HS, T, T, &one,
                                          s->y, HS, sTH, att_used, T, sTT, &zero, s->dv, HS, sTH, batch));
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, T, T, HS, &one,
                                          s->v, HS, sTH, s->y, HS, sTH, &zero, s->datt, T, sTT, batch));
    softmax_causal_backward_kernel<<<ceil_div(rows, block / 32), block>>>(s->datt, s->att, rows, T, drop_key,
                                                                          drop ? drop->threshold : 0,
                                                                          drop ? drop->scale : 1.0f);
    launchCheck();
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, HS, T, T, &scale,
                                          s->k, HS, sTH, s->datt, T, sTT, &zero, s->dq, HS, sTH, batch));
    cublasCheck(cublasSgemmStridedBatched(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, HS, T, T, &scale,
                                          s->q, HS, sTH, s->datt, T, sTT, &zero, s->dk, HS, sTH, batch));
    merge_qkv_kernel<<<ceil_div(N, block), block>>>(dqkv, s->dq, s->dk, s->dv, B, T, NH, HS);
    launchCheck();
}

// ----------------------------------------------------------------------------
// attention, version 2: fused flash-style kernels on the SIMT cores
// (dev/cuda/attention_forward.cu and attention_backward.cu, version 2)

template <int N>
__device__ __forceinline__ void load_vec(float (&dst)[N], const float* src) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            float4 v = *reinterpret_cast<const float4*>(src + i);
            dst[i] = v.x; dst[i + 1] = v.y; dst[i + 2] = v.z; dst[i + 3] = v.w;
        }
    } else if constexpr (N % 2 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 2) {
            float2 v = *reinterpret_cast<const float2*>(src + i);
            dst[i] = v.x; dst[i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) dst[i] = src[i];
    }
}

// acc[i][j] += sum_{k<K} A[k*lda + m0 + i] * B[k*ldb + n0 + j]   (shared memory operands)
template <int TM, int TN>
__device__ __forceinline__ void mma_tile(float (&acc)[TM][TN], const float* A, int lda, int m0,
                                         const float* B, int ldb, int n0, int K) {
#pragma unroll 4
    for (int k = 0; k < K; k++) {
        float a[TM], b[TN];
        load_vec<TM>(a, A + (size_t)k * lda + m0);
        load_vec<TN>(b, B + (size_t)k * ldb + n0);
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// rows [r0, r0+R) of a head slice (HS floats, rows `stride` floats apart, T rows)
// into shared memory, zero past T; transposed: dst[d*ld + r], else dst[r*ld + d]
template <int R, int HS, bool TRANSPOSED>
__device__ __forceinline__ void load_rows(float* dst, int ld, const float* src, size_t stride, int r0, int T) {
    for (int idx = threadIdx.x; idx < R * HS; idx += blockDim.x) {
        int r = idx / HS, d = idx % HS;
        float x = (r0 + r < T) ? src[(size_t)(r0 + r) * stride + d] : 0.0f;
        if (TRANSPOSED) dst[d * ld + r] = x;
        else dst[r * ld + d] = x;
    }
}

// max / sum over the 16 lanes of a row group (lanes differing in bits 0..3)
__device__ __forceinline__ float group16_max(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}
__device__ __forceinline__ float group16_sum(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}

#define ATT_THREADS 256  // 16 x 16: tx = tid % 16, ty = tid / 16
#define FWD_BQ 64
#define FWD_BK 64
#define DKV_BK 64
#define DKV_BQ 32
#define DQ_BQ 64
#define DQ_BK 32

template <int HS>
constexpr size_t attention_forward_smem_floats() {
    return (size_t)HS * (FWD_BQ + 4) + (size_t)HS * (FWD_BK + 4) + (size_t)FWD_BK * HS + (size_t)FWD_BK * (FWD_BQ + 4);
}
template <int HS>
constexpr size_t attention_dkdv_smem_floats() {
    return 2 * (size_t)HS * (DKV_BK + 4) + 2 * (size_t)HS * (DKV_BQ + 4) + 2 * (size_t)DKV_BQ * HS +
           2 * (size_t)DKV_BQ * (DKV_BK + 4) + 2 * (size_t)DKV_BQ;
}
template <int HS>
constexpr size_t attention_dq_smem_floats() {
    return 2 * (size_t)HS * (DQ_BQ + 4) + 2 * (size_t)HS * (DQ_BK + 4) + (size_t)DQ_BK * HS +
           (size_t)DQ_BK * (DQ_BQ + 4) + 2 * (size_t)DQ_BQ;
}

// out (B,T,C) and lse (B,NH,T) from qkv (B,T,3C). grid (ceil(T/64), B*NH), 256 threads.
template <int HS>
__global__ void __launch_bounds__(ATT_THREADS) attention_forward_fused_kernel(float* out, float* lse, const float* qkv,
                                                                               int T, int NH) {
    constexpr int LDQ = FWD_BQ + 4, LDK = FWD_BK + 4;
    constexpr int DT = HS / 16;
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    float* Qt = smem;              // (HS, LDQ)  Qt[d][r]
    float* Kt = Qt + HS * LDQ;     // (HS, LDK)  Kt[d][c]
    float* Vs = Kt + HS * LDK;     // (BK, HS)   Vs[c][d]
    float* Pt = Vs + FWD_BK * HS;  // (BK, LDQ)  Pt[c][r] = p[r][c]

    const int C = NH * HS;
    const int num_qt = (T + FWD_BQ - 1) / FWD_BQ;
    const int qt = num_qt - 1 - blockIdx.x;  // the longest rows first
    const int b = blockIdx.y / NH, h = blockIdx.y % NH;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + (size_t)h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const int r0 = qt * FWD_BQ;

    load_rows<FWD_BQ, HS, true>(Qt, LDQ, qbase, stride, r0, T);

    float m[4], l[4], o[4][DT];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = -FLT_MAX;
        l[i] = 0.0f;
#pragma unroll
        for (int d = 0; d < DT; d++) o[i][d] = 0.0f;
    }

    const int last_kt = min(r0 + FWD_BQ - 1, T - 1) / FWD_BK;
    for (int kt = 0; kt <= last_kt; kt++) {
        const int c0 = kt * FWD_BK;
        __syncthreads();
        load_rows<FWD_BK, HS, true>(Kt, LDK, kbase, stride, c0, T);
        load_rows<FWD_BK, HS, false>(Vs, HS, vbase, stride, c0, T);
        __syncthreads();

        float s[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) s[i][j] = 0.0f;
        mma_tile<4, 4>(s, Qt, LDQ, ty * 4, Kt, LDK, tx * 4, HS);

#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = r0 + ty * 4 + i;
            float rowmax = -FLT_MAX;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                s[i][j] *= scale;
                if (c0 + tx * 4 + j <= r) rowmax = fmaxf(rowmax, s[i][j]);
            }
            rowmax = group16_max(rowmax);
            const float m_new = fmaxf(m[i], rowmax);
            const float alpha = expf(m[i] - m_new);
            float rowsum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float p = (c0 + tx * 4 + j <= r) ? expf(s[i][j] - m_new) : 0.0f;
                s[i][j] = p;
                rowsum += p;
            }
            rowsum = group16_sum(rowsum);
            l[i] = l[i] * alpha + rowsum;
            m[i] = m_new;
#pragma unroll
            for (int d = 0; d < DT; d++) o[i][d] *= alpha;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            *reinterpret_cast<float4*>(&Pt[(tx * 4 + j) * LDQ + ty * 4]) = make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
        }
        __syncthreads();
        mma_tile<4, DT>(o, Pt, LDQ, ty * 4, Vs, HS, tx * DT, FWD_BK);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = r0 + ty * 4 + i;
        if (r >= T) continue;
        const float inv = 1.0f / l[i];
        float* dst = out + ((size_t)b * T + r) * C + (size_t)h * HS + tx * DT;
#pragma unroll
        for (int d = 0; d < DT; d++) dst[d] = o[i][d] * inv;
        if (tx == 0) lse[(size_t)blockIdx.y * T + r] = m[i] + logf(l[i]);
    }
}

// Dvec[b,h,t] = sum_d dout[b,t,h*HS+d] * out[b,t,h*HS+d]; thread per (b,t,h)
__global__ void attention_backward_D_kernel(float* Dvec, const float* dout, const float* out, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * NH) return;
    int h = (int)(idx % NH);
    size_t bt = idx / NH;
    int t = (int)(bt % T), b = (int)(bt / T);
    const float* x = dout + bt * NH * HS + (size_t)h * HS;
    const float* y = out + bt * NH * HS + (size_t)h * HS;
    float acc = 0.0f;
    for (int d = 0; d < HS; d++) acc += x[d] * y[d];
    Dvec[((size_t)b * NH + h) * T + t] = acc;
}

// dK, dV of 64 keys per block, walking query tiles of 32. grid (ceil(T/64), B*NH).
template <int HS>
__global__ void __launch_bounds__(ATT_THREADS) attention_backward_dkdv_kernel(
    float* dqkv, const float* dout, const float* qkv, const float* lse, const float* Dvec, int T, int NH) {
    constexpr int LDK = DKV_BK + 4, LDQ = DKV_BQ + 4;
    constexpr int DT = HS / 16;
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    float* Kt = smem;                // (HS, LDK)  Kt[d][c]
    float* Vt = Kt + HS * LDK;       // (HS, LDK)  Vt[d][c]
    float* Qt = Vt + HS * LDK;       // (HS, LDQ)  Qt[d][r]
    float* dOt = Qt + HS * LDQ;      // (HS, LDQ)  dOt[d][r]
    float* Qs = dOt + HS * LDQ;      // (BQ, HS)   Qs[r][d]
    float* dOs = Qs + DKV_BQ * HS;   // (BQ, HS)   dOs[r][d]
    float* Ps = dOs + DKV_BQ * HS;   // (BQ, LDK)  P[r][c]
    float* dSs = Ps + DKV_BQ * LDK;  // (BQ, LDK)  dS[r][c]
    float* Ls = dSs + DKV_BQ * LDK;  // (BQ)
    float* Ds = Ls + DKV_BQ;         // (BQ)

    const int C = NH * HS;
    const int kt = blockIdx.x;  // low key tiles see the most queries: they go first
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + (size_t)h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float* obase = dout + (size_t)b * T * C + (size_t)h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const int c0 = kt * DKV_BK;

    load_rows<DKV_BK, HS, true>(Kt, LDK, kbase, stride, c0, T);
    load_rows<DKV_BK, HS, true>(Vt, LDK, vbase, stride, c0, T);

    float dk[4][DT], dv[4][DT];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int d = 0; d < DT; d++) { dk[i][d] = 0.0f; dv[i][d] = 0.0f; }

    const int num_qt = (T + DKV_BQ - 1) / DKV_BQ;
    for (int qt = c0 / DKV_BQ; qt < num_qt; qt++) {
        const int r0 = qt * DKV_BQ;
        __syncthreads();
        load_rows<DKV_BQ, HS, true>(Qt, LDQ, qbase, stride, r0, T);
        load_rows<DKV_BQ, HS, true>(dOt, LDQ, obase, C, r0, T);
        load_rows<DKV_BQ, HS, false>(Qs, HS, qbase, stride, r0, T);
        load_rows<DKV_BQ, HS, false>(dOs, HS, obase, C, r0, T);
        for (int i = threadIdx.x; i < DKV_BQ; i += blockDim.x) {
            const int r = r0 + i;
            Ls[i] = (r < T) ? lse[(size_t)bh * T + r] : 0.0f;
            Ds[i] = (r < T) ? Dvec[(size_t)bh * T + r] : 0.0f;
        }
        __syncthreads();

        float st[4][2], dpt[4][2];  // keys ty*4+i, queries tx*2+j
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) { st[i][j] = 0.0f; dpt[i][j] = 0.0f; }
        mma_tile<4, 2>(st, Kt, LDK, ty * 4, Qt, LDQ, tx * 2, HS);
        mma_tile<4, 2>(dpt, Vt, LDK, ty * 4, dOt, LDQ, tx * 2, HS);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int c = c0 + ty * 4 + i;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int rl = tx * 2 + j, r = r0 + rl;
                const float p = (r < T && c <= r) ? expf(st[i][j] * scale - Ls[rl]) : 0.0f;
                st[i][j] = p;
                dpt[i][j] = p * (dpt[i][j] - Ds[rl]);
            }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int rl = tx * 2 + j;
            *reinterpret_cast<float4*>(&Ps[rl * LDK + ty * 4]) = make_float4(st[0][j], st[1][j], st[2][j], st[3][j]);
            *reinterpret_cast<float4*>(&dSs[rl * LDK + ty * 4]) = make_float4(dpt[0][j], dpt[1][j], dpt[2][j], dpt[3][j]);
        }
        __syncthreads();
        mma_tile<4, DT>(dv, Ps, LDK, ty * 4, dOs, HS, tx * DT, DKV_BQ);
        mma_tile<4, DT>(dk, dSs, LDK, ty * 4, Qs, HS, tx * DT, DKV_BQ);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int c = c0 + ty * 4 + i;
        if (c >= T) continue;
        float* dst = dqkv + ((size_t)b * T + c) * stride + (size_t)h * HS + tx * DT;
#pragma unroll
        for (int d = 0; d < DT; d++) {
            dst[C + d] = dk[i][d] * scale;
            dst[2 * C + d] = dv[i][d];
        }
    }
}

// dQ of 64 queries per block, walking key tiles of 32. grid (ceil(T/64), B*NH).
template <int HS>
__global__ void __launch_bounds__(ATT_THREADS) attention_backward_dq_kernel(
    float* dqkv, const float* dout, const float* qkv, const float* lse, const float* Dvec, int T, int NH) {
    constexpr int LDQ = DQ_BQ + 4, LDK = DQ_BK + 4;
    constexpr int DT = HS / 16;
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    float* Qt = smem;               // (HS, LDQ)  Qt[d][r]
    float* dOt = Qt + HS * LDQ;     // (HS, LDQ)  dOt[d][r]
    float* Kt = dOt + HS * LDQ;     // (HS, LDK)  Kt[d][c]
    float* Vt = Kt + HS * LDK;      // (HS, LDK)  Vt[d][c]
    float* Ks = Vt + HS * LDK;      // (BK, HS)   Ks[c][d]
    float* dSt = Ks + DQ_BK * HS;   // (BK, LDQ)  dSt[c][r] = dS[r][c]
    float* Ls = dSt + DQ_BK * LDQ;  // (BQ)
    float* Ds = Ls + DQ_BQ;         // (BQ)

    const int C = NH * HS;
    const int num_qt = (T + DQ_BQ - 1) / DQ_BQ;
    const int qt = num_qt - 1 - blockIdx.x;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + (size_t)h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float* obase = dout + (size_t)b * T * C + (size_t)h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const int r0 = qt * DQ_BQ;

    load_rows<DQ_BQ, HS, true>(Qt, LDQ, qbase, stride, r0, T);
    load_rows<DQ_BQ, HS, true>(dOt, LDQ, obase, C, r0, T);
    for (int i = threadIdx.x; i < DQ_BQ; i += blockDim.x) {
        const int r = r0 + i;
        Ls[i] = (r < T) ? lse[(size_t)bh * T + r] : 0.0f;
        Ds[i] = (r < T) ? Dvec[(size_t)bh * T + r] : 0.0f;
    }

    float dq[4][DT];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int d = 0; d < DT; d++) dq[i][d] = 0.0f;

    const int last_kt = min(r0 + DQ_BQ - 1, T - 1) / DQ_BK;
    for (int kt = 0; kt <= last_kt; kt++) {
        const int c0 = kt * DQ_BK;
        __syncthreads();
        load_rows<DQ_BK, HS, true>(Kt, LDK, kbase, stride, c0, T);
        load_rows<DQ_BK, HS, true>(Vt, LDK, vbase, stride, c0, T);
        load_rows<DQ_BK, HS, false>(Ks, HS, kbase, stride, c0, T);
        __syncthreads();

        float s[4][2], dp[4][2];  // queries ty*4+i, keys tx*2+j
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) { s[i][j] = 0.0f; dp[i][j] = 0.0f; }
        mma_tile<4, 2>(s, Qt, LDQ, ty * 4, Kt, LDK, tx * 2, HS);
        mma_tile<4, 2>(dp, dOt, LDQ, ty * 4, Vt, LDK, tx * 2, HS);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int rl = ty * 4 + i, r = r0 + rl;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int c = c0 + tx * 2 + j;
                const float p = (r < T && c <= r) ? expf(s[i][j] * scale - Ls[rl]) : 0.0f;
                s[i][j] = p * (dp[i][j] - Ds[rl]);
            }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            *reinterpret_cast<float4*>(&dSt[(tx * 2 + j) * LDQ + ty * 4]) = make_float4(s[0][j], s[1][j], s[2][j], s[3][j]);
        }
        __syncthreads();
        mma_tile<4, DT>(dq, dSt, LDQ, ty * 4, Ks, HS, tx * DT, DQ_BK);
    }

#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = r0 + ty * 4 + i;
        if (r >= T) continue;
        float* dst = dqkv + ((size_t)b * T + r) * stride + (size_t)h * HS + tx * DT;
#pragma unroll
        for (int d = 0; d < DT; d++) dst[d] = dq[i][d] * scale;
    }
}

// ----------------------------------------------------------------------------
// attention, version 3: the fused algorithm on TF32 tensor cores (WMMA m16n16k8), used
// with --tf32 1 (dev/cuda/attention_forward.cu and attention_backward.cu, version 3)

using namespace nvcuda;
#define TC_THREADS 128  // 4 warps x 16 rows
#define TC_PAD 4        // row padding (floats): keeps WMMA's 32-byte alignment

template <int HS>
__host__ __device__ constexpr int tc_region_floats() { return 64 * ((HS > 64 ? HS : 64) + TC_PAD); }
// regions: 4 tiles (64, HS+pad) and 2 per-warp scratch (4 x 16, 64+pad), plus lse and D of 64 rows
template <int HS>
constexpr size_t attention_backward_tc_smem_floats() { return 6 * (size_t)tc_region_floats<HS>() + 128; }

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> FragBRow;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> FragBCol;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> FragC;

template <class F>
__device__ __forceinline__ void load_tf32(F& f, const float* p, int ld) {
    wmma::load_matrix_sync(f, p, ld);
#pragma unroll
    for (int i = 0; i < f.num_elements; i++) f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

// X (16 x 64) += A_w (16 x HS rows of A at Aw, ld lda) @ B^T where B is 64 rows (ld ldb) of
// HS: X[i][j] = sum_d A[i][d] * B[j][d], into 4 accumulators of 16 columns
template <int HS>
__device__ __forceinline__ void mma_abt(FragC (&acc)[4], const float* Aw, int lda, const float* Bt, int ldb) {
#pragma unroll
    for (int k = 0; k < HS / 8; k++) {
        FragA a;
        load_tf32(a, Aw + k * 8, lda);
#pragma unroll
        for (int n = 0; n < 4; n++) {
            FragBCol b;  // element (kk, j) = B[16n + j][8k + kk]
            load_tf32(b, Bt + n * 16 * ldb + k * 8, ldb);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
}

// Y (16 x HS) += X_w (16 x 64 at Xw, ld ldx) @ M (64 x HS at Ms, ld ldm)
template <int HS>
__device__ __forceinline__ void mma_xm(FragC (&acc)[HS / 16], const float* Xw, int ldx, const float* Ms, int ldm) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        FragA a;
        load_tf32(a, Xw + k * 8, ldx);
#pragma unroll
        for (int n = 0; n < HS / 16; n++) {
            FragBRow b;  // element (kk, j) = M[8k + kk][16n + j]
            load_tf32(b, Ms + k * 8 * ldm + n * 16, ldm);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
}

template <int HS>
constexpr size_t attention_forward_tc_smem_floats() { return 3 * (size_t)tc_region_floats<HS>(); }

// grid (ceil(T/64), B*NH), 128 threads, dynamic shared attention_forward_tc_smem_floats<HS>()
template <int HS>
__global__ void __launch_bounds__(TC_THREADS) attention_forward_tc_kernel(float* out, float* lse, const float* qkv,
                                                                          int T, int NH) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDH = HS + TC_PAD;  // rows of the Q, K, V tiles and the P V scratch
    constexpr int LDS = 64 + TC_PAD;  // rows of the S / P scratch
    constexpr int R = tc_region_floats<HS>();
    extern __shared__ __align__(128) float4 smem4[];  // WMMA pointers need 32-byte alignment
    float* smem = reinterpret_cast<float*>(smem4);
    float* QS = smem;          // the Q tile (64, LDH), then each warp's S / P rows (16, LDS)
    float* KO = smem + R;      // the K tile (64, LDH), then each warp's P V rows (16, LDH)
    float* Vs = smem + 2 * R;  // the V tile (64, LDH)

    const int C = NH * HS;
    const int num_qt = (T + 63) / 64;
    const int qt = num_qt - 1 - blockIdx.x;
    const int b = blockIdx.y / NH, h = blockIdx.y % NH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float scale = 1.0f / sqrtf((float)HS);
    const int r0 = qt * 64;

    load_rows<64, HS, false>(QS, LDH, qbase, stride, r0, T);
    __syncthreads();
    FragA qf[HS / 8];  // this warp's 16 query rows, kept for every key tile
#pragma unroll
    for (int k = 0; k < HS / 8; k++) load_tf32(qf[k], QS + warp * 16 * LDH + k * 8, LDH);

    // lane pair (2 rr, 2 rr + 1) owns row rr of the warp's 16: half of its keys and dims
    const int rr = lane / 2, half = lane % 2;
    const int r = r0 + warp * 16 + rr;
    float m = -FLT_MAX, l = 0.0f, o[HS / 2];
#pragma unroll
    for (int d = 0; d < HS / 2; d++) o[d] = 0.0f;
    float* Sw = QS + warp * 16 * LDS;
    float* Ow = KO + warp * 16 * LDH;

    const int last_kt = min(r0 + 63, T - 1) / 64;
    for (int kt = 0; kt <= last_kt; kt++) {
        const int c0 = kt * 64;
        __syncthreads();  // Q fragments loaded / the last tile's K, V and P V scratch read
        load_rows<64, HS, false>(KO, LDH, kbase, stride, c0, T);
        load_rows<64, HS, false>(Vs, LDH, vbase, stride, c0, T);
        __syncthreads();

        FragC sf[4];
#pragma unroll
        for (int n = 0; n < 4; n++) wmma::fill_fragment(sf[n], 0.0f);
#pragma unroll
        for (int k = 0; k < HS / 8; k++) {
#pragma unroll
            for (int n = 0; n < 4; n++) {
                FragBCol kf;  // element (kk, j) = K[16n + j][8k + kk]
                load_tf32(kf, KO + n * 16 * LDH + k * 8, LDH);
                wmma::mma_sync(sf[n], qf[k], kf, sf[n]);
            }
        }
#pragma unroll
        for (int n = 0; n < 4; n++) wmma::store_matrix_sync(Sw + n * 16, sf[n], LDS, wmma::mem_row_major);
        __syncwarp();

        float* srow = Sw + rr * LDS + half * 32;
        float mx = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (c0 + half * 32 + j <= r) mx = fmaxf(mx, srow[j] * scale);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
        const float m_new = fmaxf(m, mx);
        const float alpha = expf(m - m_new);
        float sum = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float p = (c0 + half * 32 + j <= r) ? expf(srow[j] * scale - m_new) : 0.0f;
            srow[j] = p;
            sum += p;
        }
        sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
        l = l * alpha + sum;
        m = m_new;
        __syncwarp();

        FragC of[HS / 16];
#pragma unroll
        for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(of[n], 0.0f);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            FragA pf;
            load_tf32(pf, Sw + k * 8, LDS);
#pragma unroll
            for (int n = 0; n < HS / 16; n++) {
                FragBRow vf;  // element (kk, j) = V[8k + kk][16n + j]
                load_tf32(vf, Vs + k * 8 * LDH + n * 16, LDH);
                wmma::mma_sync(of[n], pf, vf, of[n]);
            }
        }
        __syncthreads();  // every warp is done with the K tile: its region takes the P V rows
#pragma unroll
        for (int n = 0; n < HS / 16; n++) wmma::store_matrix_sync(Ow + n * 16, of[n], LDH, wmma::mem_row_major);
        __syncwarp();
        const float* pv = Ow + rr * LDH + half * (HS / 2);
#pragma unroll
        for (int d = 0; d < HS / 2; d++) o[d] = o[d] * alpha + pv[d];
    }

    if (r < T) {
        const float inv = 1.0f / l;
        float* dst = out + ((size_t)b * T + r) * C + h * HS + half * (HS / 2);
#pragma unroll
        for (int d = 0; d < HS / 2; d++) dst[d] = o[d] * inv;
        if (half == 0) lse[(size_t)blockIdx.y * T + r] = m + logf(l);
    }
#else
    __trap();  // needs sm_80 (TF32 tensor cores); the host never launches it below
#endif
}

// dK, dV of 64 keys per block (warp w: keys 16w..16w+15), walking the query tiles of 64 at
// and below the diagonal. grid (ceil(T/64), B*NH), 128 threads.
template <int HS>
__global__ void __launch_bounds__(TC_THREADS) attention_backward_dkdv_tc_kernel(
    float* dqkv, const float* dout, const float* qkv, const float* lse, const float* Dvec, int T, int NH) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDH = HS + TC_PAD, LDS = 64 + TC_PAD;
    constexpr int R = tc_region_floats<HS>();
    extern __shared__ __align__(128) float4 smem4[];  // WMMA pointers need 32-byte alignment
    float* smem = reinterpret_cast<float*>(smem4);
    float* Ks = smem;          // (64, LDH) this block's keys
    float* Vs = smem + R;      // (64, LDH)
    float* Qs = smem + 2 * R;  // (64, LDH) the step's queries
    float* dOs = smem + 3 * R; // (64, LDH)
    float* SP = smem + 4 * R;  // per warp (16, LDS): S^T, then P^T; at the end dK
    float* DP = smem + 5 * R;  // per warp (16, LDS): dP^T, then dS^T; at the end dV
    float* Ls = smem + 6 * R;  // (64)
    float* Ds = Ls + 64;       // (64)

    const int C = NH * HS;
    const int kt = blockIdx.x;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float* obase = dout + (size_t)b * T * C + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const int c0 = kt * 64;
    const int rr = lane / 2, half = lane % 2;  // lane pair: row rr of the warp's 16, half the columns
    const int c = c0 + warp * 16 + rr;         // this lane's key
    float* SPw = SP + warp * 16 * LDS;
    float* DPw = DP + warp * 16 * LDS;

    load_rows<64, HS, false>(Ks, LDH, kbase, stride, c0, T);
    load_rows<64, HS, false>(Vs, LDH, vbase, stride, c0, T);
    FragC dk[HS / 16], dv[HS / 16];
#pragma unroll
    for (int n = 0; n < HS / 16; n++) { wmma::fill_fragment(dk[n], 0.0f); wmma::fill_fragment(dv[n], 0.0f); }

    const int num_qt = (T + 63) / 64;
    for (int qt = kt; qt < num_qt; qt++) {
        const int r0 = qt * 64;
        __syncthreads();  // the previous step's Q, dO tiles are no longer read
        load_rows<64, HS, false>(Qs, LDH, qbase, stride, r0, T);
        load_rows<64, HS, false>(dOs, LDH, obase, C, r0, T);
        for (int i = threadIdx.x; i < 64; i += blockDim.x) {
            Ls[i] = (r0 + i < T) ? lse[(size_t)bh * T + r0 + i] : 0.0f;
            Ds[i] = (r0 + i < T) ? Dvec[(size_t)bh * T + r0 + i] : 0.0f;
        }
        __syncthreads();

        FragC st[4], dpt[4];
#pragma unroll
        for (int n = 0; n < 4; n++) { wmma::fill_fragment(st[n], 0.0f); wmma::fill_fragment(dpt[n], 0.0f); }
        mma_abt<HS>(st, Ks + warp * 16 * LDH, LDH, Qs, LDH);    // S^T[c][r] = k_c . q_r
        mma_abt<HS>(dpt, Vs + warp * 16 * LDH, LDH, dOs, LDH);  // dP^T[c][r] = v_c . dO_r
#pragma unroll
        for (int n = 0; n < 4; n++) {
            wmma::store_matrix_sync(SPw + n * 16, st[n], LDS, wmma::mem_row_major);
            wmma::store_matrix_sync(DPw + n * 16, dpt[n], LDS, wmma::mem_row_major);
        }
        __syncwarp();
        for (int j = 0; j < 32; j++) {
            const int ql = half * 32 + j, r = r0 + ql;
            const float p = (r < T && c <= r) ? expf(SPw[rr * LDS + ql] * scale - Ls[ql]) : 0.0f;
            SPw[rr * LDS + ql] = p;
            DPw[rr * LDS + ql] = p * (DPw[rr * LDS + ql] - Ds[ql]);
        }
        __syncwarp();
        mma_xm<HS>(dv, SPw, LDS, dOs, LDH);  // dV[c] += sum_r P[r][c] dO[r]
        mma_xm<HS>(dk, DPw, LDS, Qs, LDH);   // dK[c] += sum_r dS[r][c] Q[r]
    }

#pragma unroll
    for (int n = 0; n < HS / 16; n++) {
#pragma unroll
        for (int i = 0; i < dk[n].num_elements; i++) dk[n].x[i] *= scale;
        wmma::store_matrix_sync(SPw + n * 16, dk[n], LDS, wmma::mem_row_major);
        wmma::store_matrix_sync(DPw + n * 16, dv[n], LDS, wmma::mem_row_major);
    }
    __syncwarp();
    if (c < T) {
        float* dst = dqkv + ((size_t)b * T + c) * stride + h * HS;
        for (int d = half * (HS / 2); d < (half + 1) * (HS / 2); d++) {
            dst[C + d] = SPw[rr * LDS + d];
            dst[2 * C + d] = DPw[rr * LDS + d];
        }
    }
#else
    __trap();
#endif
}

// dQ of 64 queries per block (warp w: queries 16w..16w+15), walking the key tiles of 64
// up to the diagonal. grid (ceil(T/64), B*NH), 128 threads.
template <int HS>
__global__ void __launch_bounds__(TC_THREADS) attention_backward_dq_tc_kernel(
    float* dqkv, const float* dout, const float* qkv, const float* lse, const float* Dvec, int T, int NH) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDH = HS + TC_PAD, LDS = 64 + TC_PAD;
    constexpr int R = tc_region_floats<HS>();
    extern __shared__ __align__(128) float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    float* Qs = smem;          // (64, LDH) this block's queries
    float* dOs = smem + R;     // (64, LDH)
    float* Ks = smem + 2 * R;  // (64, LDH) the step's keys
    float* Vs = smem + 3 * R;  // (64, LDH)
    float* SP = smem + 4 * R;  // per warp (16, LDS): S, then dS; at the end dQ
    float* DP = smem + 5 * R;  // per warp (16, LDS): dP
    float* Ls = smem + 6 * R;  // (64)
    float* Ds = Ls + 64;       // (64)

    const int C = NH * HS;
    const int num_qt = (T + 63) / 64;
    const int qt = num_qt - 1 - blockIdx.x;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + h * HS;
    const float* kbase = qbase + C;
    const float* vbase = qbase + 2 * C;
    const float* obase = dout + (size_t)b * T * C + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    const int r0 = qt * 64;
    const int rr = lane / 2, half = lane % 2;
    const int rl = warp * 16 + rr, r = r0 + rl;  // this lane's query
    float* SPw = SP + warp * 16 * LDS;
    float* DPw = DP + warp * 16 * LDS;

    load_rows<64, HS, false>(Qs, LDH, qbase, stride, r0, T);
    load_rows<64, HS, false>(dOs, LDH, obase, C, r0, T);
    for (int i = threadIdx.x; i < 64; i += blockDim.x) {
        Ls[i] = (r0 + i < T) ? lse[(size_t)bh * T + r0 + i] : 0.0f;
        Ds[i] = (r0 + i < T) ? Dvec[(size_t)bh * T + r0 + i] : 0.0f;
    }
    FragC dq[HS / 16];
#pragma unroll
    for (int n = 0; n < HS / 16; n++) wmma::fill_fragment(dq[n], 0.0f);

    const int last_kt = min(r0 + 63, T - 1) / 64;
    for (int kt = 0; kt <= last_kt; kt++) {
        const int c0 = kt * 64;
        __syncthreads();  // the previous step's K, V tiles are no longer read
        load_rows<64, HS, false>(Ks, LDH, kbase, stride, c0, T);
        load_rows<64, HS, false>(Vs, LDH, vbase, stride, c0, T);
        __syncthreads();

        FragC s[4], dp[4];
#pragma unroll
        for (int n = 0; n < 4; n++) { wmma::fill_fragment(s[n], 0.0f); wmma::fill_fragment(dp[n], 0.0f); }
        mma_abt<HS>(s, Qs + warp * 16 * LDH, LDH, Ks, LDH);    // S[r][c] = q_r . k_c
        mma_abt<HS>(dp, dOs + warp * 16 * LDH, LDH, Vs, LDH);  // dP[r][c] = dO_r . v_c
#pragma unroll
        for (int n = 0; n < 4; n++) {
            wmma::store_matrix_sync(SPw + n * 16, s[n], LDS, wmma::mem_row_major);
            wmma::store_matrix_sync(DPw + n * 16, dp[n], LDS, wmma::mem_row_major);
        }
        __syncwarp();
        for (int j = 0; j < 32; j++) {
            const int cl = half * 32 + j, cc = c0 + cl;
            const float p = (r < T && cc <= r) ? expf(SPw[rr * LDS + cl] * scale - Ls[rl]) : 0.0f;
            SPw[rr * LDS + cl] = p * (DPw[rr * LDS + cl] - Ds[rl]);  // dS
        }
        __syncwarp();
        mma_xm<HS>(dq, SPw, LDS, Ks, LDH);  // dQ[r] += sum_c dS[r][c] K[c]
    }

#pragma unroll
    for (int n = 0; n < HS / 16; n++) {
#pragma unroll
        for (int i = 0; i < dq[n].num_elements; i++) dq[n].x[i] *= scale;
        wmma::store_matrix_sync(SPw + n * 16, dq[n], LDS, wmma::mem_row_major);
    }
    __syncwarp();
    if (r < T) {
        float* dst = dqkv + ((size_t)b * T + r) * stride + h * HS;
        for (int d = half * (HS / 2); d < (half + 1) * (HS / 2); d++) dst[d] = SPw[rr * LDS + d];
    }
#else
    __trap();
#endif
}

// Shared memory the tensor-core kernels need for head size HS (0: HS unsupported).
static size_t attention_tc_smem_bytes(int HS) {
    size_t f = 0, b = 0;
    switch (HS) {
        case 16: f = attention_forward_tc_smem_floats<16>(); b = attention_backward_tc_smem_floats<16>(); break;
        case 32: f = attention_forward_tc_smem_floats<32>(); b = attention_backward_tc_smem_floats<32>(); break;
        case 64: f = attention_forward_tc_smem_floats<64>(); b = attention_backward_tc_smem_floats<64>(); break;
        default: return 0;
    }
    return (f > b ? f : b) * sizeof(float);
}

template <int HS>
static void attention_tc_setup_hs(void) {
    cudaCheck(cudaFuncSetAttribute(attention_forward_tc_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_forward_tc_smem_floats<HS>() * sizeof(float))));
    cudaCheck(cudaFuncSetAttribute(attention_backward_dkdv_tc_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_backward_tc_smem_floats<HS>() * sizeof(float))));
    cudaCheck(cudaFuncSetAttribute(attention_backward_dq_tc_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_backward_tc_smem_floats<HS>() * sizeof(float))));
}

template <int HS>
static void attention_forward_tc_hs(float* out, float* lse, const float* qkv, int B, int T, int NH) {
    dim3 grid(ceil_div(T, 64), B * NH);
    attention_forward_tc_kernel<HS><<<grid, TC_THREADS, attention_forward_tc_smem_floats<HS>() * sizeof(float)>>>(
        out, lse, qkv, T, NH);
    launchCheck();
}

template <int HS>
static void attention_backward_tc_hs(float* dqkv, float* Dvec, const float* dout, const float* qkv,
                                     const float* out, const float* lse, int B, int T, int NH) {
    const int block = 256;
    attention_backward_D_kernel<<<ceil_div((size_t)B * T * NH, block), block>>>(Dvec, dout, out, B, T, NH, HS);
    launchCheck();
    size_t smem = attention_backward_tc_smem_floats<HS>() * sizeof(float);
    dim3 grid(ceil_div(T, 64), B * NH);
    attention_backward_dkdv_tc_kernel<HS><<<grid, TC_THREADS, smem>>>(dqkv, dout, qkv, lse, Dvec, T, NH);
    launchCheck();
    attention_backward_dq_tc_kernel<HS><<<grid, TC_THREADS, smem>>>(dqkv, dout, qkv, lse, Dvec, T, NH);
    launchCheck();
}

// Shared memory the fp32 fused kernels need for head size HS (0: HS unsupported).
static size_t attention_fused_smem_bytes(int HS) {
    size_t f = 0, a = 0, b = 0;
    switch (HS) {
        case 16: f = attention_forward_smem_floats<16>(); a = attention_dkdv_smem_floats<16>(); b = attention_dq_smem_floats<16>(); break;
        case 32: f = attention_forward_smem_floats<32>(); a = attention_dkdv_smem_floats<32>(); b = attention_dq_smem_floats<32>(); break;
        case 64: f = attention_forward_smem_floats<64>(); a = attention_dkdv_smem_floats<64>(); b = attention_dq_smem_floats<64>(); break;
        case 128: f = attention_forward_smem_floats<128>(); a = attention_dkdv_smem_floats<128>(); b = attention_dq_smem_floats<128>(); break;
        default: return 0;
    }
    size_t m = f > a ? f : a;
    return (m > b ? m : b) * sizeof(float);
}

template <int HS>
static void attention_fused_setup_hs(void) {
    cudaCheck(cudaFuncSetAttribute(attention_forward_fused_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_forward_smem_floats<HS>() * sizeof(float))));
    cudaCheck(cudaFuncSetAttribute(attention_backward_dkdv_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_dkdv_smem_floats<HS>() * sizeof(float))));
    cudaCheck(cudaFuncSetAttribute(attention_backward_dq_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(attention_dq_smem_floats<HS>() * sizeof(float))));
}

// raises the dynamic shared memory limit of the fused kernels for HS (once)
static void attention_fused_setup(int HS) {
    switch (HS) {
        case 16: attention_fused_setup_hs<16>(); break;
        case 32: attention_fused_setup_hs<32>(); break;
        case 64: attention_fused_setup_hs<64>(); break;
        case 128: attention_fused_setup_hs<128>(); break;
        default: fatal("internal: fused attention does not support HS=%d", HS);
    }
}

template <int HS>
static void attention_forward_fused_hs(float* out, float* lse, const float* qkv, int B, int T, int NH) {
    dim3 grid(ceil_div(T, FWD_BQ), B * NH);
    attention_forward_fused_kernel<HS><<<grid, ATT_THREADS, attention_forward_smem_floats<HS>() * sizeof(float)>>>(
        out, lse, qkv, T, NH);
    launchCheck();
}

template <int HS>
static void attention_backward_fused_hs(float* dqkv, float* Dvec, const float* dout, const float* qkv,
                                        const float* out, const float* lse, int B, int T, int NH) {
    const int block = 256;
    attention_backward_D_kernel<<<ceil_div((size_t)B * T * NH, block), block>>>(Dvec, dout, out, B, T, NH, HS);
    launchCheck();
    dim3 grid1(ceil_div(T, DKV_BK), B * NH);
    attention_backward_dkdv_kernel<HS><<<grid1, ATT_THREADS, attention_dkdv_smem_floats<HS>() * sizeof(float)>>>(
        dqkv, dout, qkv, lse, Dvec, T, NH);
    launchCheck();
    dim3 grid2(ceil_div(T, DQ_BQ), B * NH);
    attention_backward_dq_kernel<HS><<<grid2, ATT_THREADS, attention_dq_smem_floats<HS>() * sizeof(float)>>>(
        dqkv, dout, qkv, lse, Dvec, T, NH);
    launchCheck();
}

#define ATTENTION_FUSED 0       // version 2: fp32 on the SIMT cores
#define ATTENTION_CUBLAS 1      // version 1: strided-batched SGEMMs + softmax kernels
#define ATTENTION_FUSED_TF32 2  // version 3: TF32 tensor cores

typedef struct {
    int kind;                      // ATTENTION_*
    float* Dvec;                   // (B, NH, T) fused backward
    AttentionCublasScratch cublas; // version 1 buffers (NULL when fused)
} AttentionState;

// drop != NULL: dropout on the attention weights (the cuBLAS version only; main() picks it).
static void attention_forward(float* out,        // (B, T, C)
                              float* lse,        // (B, NH, T)
                              const float* qkv,  // (B, T, 3*C)
                              AttentionState* at, const DropoutConfig* drop, uint64_t drop_key,
                              int B, int T, int NH, int HS) {
    if (at->kind == ATTENTION_CUBLAS) {
        attention_forward_cublas(out, lse, qkv, &at->cublas, drop, drop_key, B, T, NH, HS);
        return;
    }
    if (drop) fatal("internal: attention dropout needs the cuBLAS attention kernels");
    if (at->kind == ATTENTION_FUSED_TF32) {
        switch (HS) {
            case 16: attention_forward_tc_hs<16>(out, lse, qkv, B, T, NH); break;
            case 32: attention_forward_tc_hs<32>(out, lse, qkv, B, T, NH); break;
            case 64: attention_forward_tc_hs<64>(out, lse, qkv, B, T, NH); break;
            default: fatal("internal: tensor-core attention does not support HS=%d", HS);
        }
        return;
    }
    switch (HS) {
        case 16: attention_forward_fused_hs<16>(out, lse, qkv, B, T, NH); break;
        case 32: attention_forward_fused_hs<32>(out, lse, qkv, B, T, NH); break;
        case 64: attention_forward_fused_hs<64>(out, lse, qkv, B, T, NH); break;
        case 128: attention_forward_fused_hs<128>(out, lse, qkv, B, T, NH); break;
        default: fatal("internal: fused attention does not support HS=%d", HS);
    }
}

// dqkv WRITTEN (=)
static void attention_backward(float* dqkv,                         // (B, T, 3*C)
                               const float* dout,                   // (B, T, C)
                               const float* qkv, const float* out,  // (B, T, 3*C), (B, T, C)
                               const float* lse,                    // (B, NH, T)
                               AttentionState* at, const DropoutConfig* drop, uint64_t drop_key,
                               int B, int T, int NH, int HS) {
    if (at->kind == ATTENTION_CUBLAS) {
        attention_backward_cublas(dqkv, dout, qkv, &at->cublas, drop, drop_key, B, T, NH, HS);
        return;
    }
    if (drop) fatal("internal: attention dropout needs the cuBLAS attention kernels");
    if (at->kind == ATTENTION_FUSED_TF32) {
        switch (HS) {
            case 16: attention_backward_tc_hs<16>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
            case 32: attention_backward_tc_hs<32>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
            case 64: attention_backward_tc_hs<64>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
            default: fatal("internal: tensor-core attention does not support HS=%d", HS);
        }
        return;
    }
    switch (HS) {
        case 16: attention_backward_fused_hs<16>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
        case 32: attention_backward_fused_hs<32>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
        case 64: attention_backward_fused_hs<64>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
        case 128: attention_backward_fused_hs<128>(dqkv, at->Dvec, dout, qkv, out, lse, B, T, NH); break;
        default: fatal("internal: fused attention does not support HS=%d", HS);
    }
}

// ----------------------------------------------------------------------------
// GELU (dev/cuda/gelu_forward.cu v3, gelu_backward.cu v2) and residual (residual_forward.cu v3)

#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)

__device__ __forceinline__ float gelu(float x) {
    float cube = 0.044715f * x * x * x;
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
}
// sech^2 as 1 - tanh^2: no cosh, which overflows for large |x|
__device__ __forceinline__ float gelu_grad(float x, float d) {
    float th = tanhf(GELU_SCALE * (x + 0.044715f * x * x * x));
    float local = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
    return local * d;
}

// dinp may alias dout (each element is read, then written, by one thread)
__global__ void gelu_backward_kernel4(float4* dinp, const float4* inp, const float4* dout, size_t N4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = inp[i], d = dout[i];
    dinp[i] = make_float4(gelu_grad(x.x, d.x), gelu_grad(x.y, d.y), gelu_grad(x.z, d.z), gelu_grad(x.w, d.w));
}

// pre (N = rows * OC) gets the matmul's bias in place, out = gelu(pre)
// (dev/cuda/gelu_forward.cu v3: one read and two writes instead of a bias pass and a GELU pass)
__global__ void bias_gelu_forward_kernel4(float4* out, float4* pre, const float4* bias, size_t N4, int OC4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = pre[i], bb = bias[i % OC4];
    x = make_float4(x.x + bb.x, x.y + bb.y, x.z + bb.z, x.w + bb.w);
    pre[i] = x;
    out[i] = make_float4(gelu(x.x), gelu(x.y), gelu(x.z), gelu(x.w));
}

// N = B*T*4C and OC = 4C are multiples of 4, and every tensor starts 16-byte aligned
static void bias_gelu_forward(float* out, float* pre, const float* bias, size_t N, int OC) {  // (N), (N), (OC)
    const int block = 256;
    bias_gelu_forward_kernel4<<<ceil_div(N / 4, block), block>>>((float4*)out, (float4*)pre, (const float4*)bias,
                                                                 N / 4, OC / 4);
    launchCheck();
}

static void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {  // (N) x3, dinp WRITTEN
    const int block = 256;
    gelu_backward_kernel4<<<ceil_div(N / 4, block), block>>>((float4*)dinp, (const float4*)inp, (const float4*)dout, N / 4);
    launchCheck();
}

// out = inp1 + (inp2 + bias[i % C]): the bias of the matmul that made inp2, fused in
// (dev/cuda/residual_forward.cu v3, and v1 with a bias where float4 does not fit)
__global__ void residual_bias_forward_kernel(float* out, const float* a, const float* b, const float* bias, size_t N, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = a[i] + (b[i] + bias[i % C]);
}
__global__ void residual_bias_forward_kernel4(float4* out, const float4* a, const float4* b, const float4* bias,
                                              size_t N4, int C4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = a[i], y = b[i], z = bias[i % C4];
    out[i] = make_float4(x.x + (y.x + z.x), x.y + (y.y + z.y), x.z + (y.z + z.z), x.w + (y.w + z.w));
}

static void residual_bias_forward(float* out, const float* inp1, const float* inp2, const float* bias,  // (N) x3, (C)
                                  size_t N, int C) {
    const int block = 256;
    if (C % 4 == 0 && ((uintptr_t)out | (uintptr_t)inp1 | (uintptr_t)inp2 | (uintptr_t)bias) % 16 == 0) {
        residual_bias_forward_kernel4<<<ceil_div(N / 4, block), block>>>((float4*)out, (const float4*)inp1,
                                                                         (const float4*)inp2, (const float4*)bias, N / 4, C / 4);
    } else {
        residual_bias_forward_kernel<<<ceil_div(N, block), block>>>(out, inp1, inp2, bias, N, C);
    }
    launchCheck();
}

// out = inp1 + D * (inp2 + bias[i % C]): residual_bias_forward with dropout (factor D_i,
// llmc/regularizers.h) on the projection's output, bias included, before the residual add
__global__ void residual_bias_dropout_forward_kernel(float* out, const float* a, const float* b, const float* bias,
                                                     size_t N, int C, uint64_t key, uint32_t threshold, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = a[i] + (b[i] + bias[i % C]) * dropout_factor(key, i, threshold, scale);
}

static void residual_bias_dropout_forward(float* out, const float* inp1, const float* inp2, const float* bias,
                                          size_t N, int C, uint64_t key, const DropoutConfig* d) {
    const int block = 256;
    residual_bias_dropout_forward_kernel<<<ceil_div(N, block), block>>>(out, inp1, inp2, bias, N, C, key,
                                                                        d->threshold, d->scale);
    launchCheck();
}

// ----------------------------------------------------------------------------
// fused classifier (dev/cuda/fused_classifier.cu v2)

typedef struct {
    float m;     // running max
    float s;     // sum of exp(x - m)
    float best;  // argmax value
    int arg;     // argmax index (smallest on ties)
} SoftmaxStat;

__device__ __forceinline__ SoftmaxStat stat_combine(SoftmaxStat a, SoftmaxStat b) {
    SoftmaxStat r;
    r.m = fmaxf(a.m, b.m);
    r.s = a.s * expf(a.m - r.m) + b.s * expf(b.m - r.m);
    if (b.best > a.best || (b.best == a.best && b.arg < a.arg)) { r.best = b.best; r.arg = b.arg; }
    else { r.best = a.best; r.arg = a.arg; }
    return r;
}

__device__ __forceinline__ SoftmaxStat stat_shfl_xor(SoftmaxStat v, int o) {
    SoftmaxStat r;
    r.m = __shfl_xor_sync(0xFFFFFFFFu, v.m, o);
    r.s = __shfl_xor_sync(0xFFFFFFFFu, v.s, o);
    r.best = __shfl_xor_sync(0xFFFFFFFFu, v.best, o);
    r.arg = __shfl_xor_sync(0xFFFFFFFFu, v.arg, o);
    return r;
}

__device__ SoftmaxStat block_stat_reduce(SoftmaxStat v) {
    __shared__ SoftmaxStat warp_stats[32];
    __shared__ SoftmaxStat result;
    for (int o = 16; o > 0; o >>= 1) v = stat_combine(v, stat_shfl_xor(v, o));
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, num_warps = blockDim.x / 32;
    if (lane == 0) warp_stats[warp] = v;
    __syncthreads();
    if (warp == 0) {
        SoftmaxStat x;
        if (lane < num_warps) x = warp_stats[lane];
        else { x.m = -FLT_MAX; x.s = 0.0f; x.best = -FLT_MAX; x.arg = 0x7FFFFFFF; }
        for (int o = 16; o > 0; o >>= 1) x = stat_combine(x, stat_shfl_xor(x, o));
        if (lane == 0) result = x;
    }
    __syncthreads();
    return result;
}

// block per row: online max / sum / argmax over the first V columns, then
// losses[r] = lse - logit[target] and (write_dlogits) dlogits = (p - onehot) * dloss[r]
// over the logits, 0 in the padded columns
__global__ void fused_classifier_kernel(float* logits, float* losses, int* argmax, const int* targets,
                                        const float* dloss, int V, int Vp, int write_dlogits) {
    int r = blockIdx.x;
    float* x = logits + (size_t)r * Vp;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    SoftmaxStat st;
    st.m = -FLT_MAX; st.s = 0.0f; st.best = -FLT_MAX; st.arg = 0x7FFFFFFF;
    for (int i = threadIdx.x; i < Vp / 4; i += blockDim.x) {
        float4 q = x4[i];
        float e[4] = {q.x, q.y, q.z, q.w};
        for (int k = 0; k < 4; k++) {
            int v = 4 * i + k;
            if (v >= V) break;
            if (e[k] > st.m) { st.s = st.s * expf(st.m - e[k]) + 1.0f; st.m = e[k]; }
            else st.s += expf(e[k] - st.m);
            if (e[k] > st.best) { st.best = e[k]; st.arg = v; }
        }
    }
    st = block_stat_reduce(st);
    const float lse = st.m + logf(st.s);
    const float dl = dloss != NULL ? dloss[r] : 0.0f;
    const int target = targets[r];
    if (argmax != NULL && threadIdx.x == 0) argmax[r] = st.arg;
    float4* g4 = reinterpret_cast<float4*>(x);
    for (int i = threadIdx.x; i < Vp / 4; i += blockDim.x) {
        float4 q = x4[i];
        float e[4] = {q.x, q.y, q.z, q.w};
        float g[4];
        for (int k = 0; k < 4; k++) {
            int v = 4 * i + k;
            if (v == target) losses[r] = lse - e[k];
            g[k] = (v < V) ? (expf(e[k] - lse) - (v == target ? 1.0f : 0.0f)) * dl : 0.0f;
        }
        if (write_dlogits) g4[i] = make_float4(g[0], g[1], g[2], g[3]);
    }
}

// ----------------------------------------------------------------------------
// AdamW (dev/cuda/adamw.cu v1: tensors start at any float offset) and the
// global norm (dev/cuda/global_norm.cu v2, deterministic)

// init != NULL: weight decay toward the initial values, p - lr_wd (p - init), instead of p * decay
__global__ void adamw_kernel(float* params, float* m, float* v, const float* grads, const float* init, size_t n,
                             float beta1, float beta2, float eps, float decay, float lr_wd, float step_size,
                             float b2s, float grad_scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float grad = grads[i] * grad_scale;
    float mj = beta1 * m[i] + (1.0f - beta1) * grad;
    float vj = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    m[i] = mj;
    v[i] = vj;
    float p = params[i];
    float pj = init != NULL ? p - lr_wd * (p - init[i]) : p * decay;
    params[i] = pj - step_size * (mj / (sqrtf(vj) / b2s + eps));
}

// params[j] += weight_noise_at(key, offset + j, sigma) for j < n: the noise of one tensor that
// starts at flat parameter index `offset` (llmc/regularizers.h; the same numbers as train_gpt2.c)
__global__ void weight_noise_kernel(float* params, size_t offset, size_t n, uint64_t key, float sigma) {
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) params[j] += weight_noise_at(key, offset + j, sigma);
}

__device__ double block_sum_double(double v) {  // the result is valid in thread 0
    __shared__ double buf[32];
    v = warp_sum_double(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    double r = 0.0;
    if (warp == 0) {
        r = (lane < (int)(blockDim.x / 32)) ? buf[lane] : 0.0;
        r = warp_sum_double(r);
    }
    return r;
}

__global__ void norm_partial_kernel(double* partial, const float* x, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double xi = x[i];
        s += xi * xi;
    }
    s = block_sum_double(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void norm_final_kernel(double* out, const double* partial, int num_partials) {
    double s = 0.0;
    for (int i = threadIdx.x; i < num_partials; i += blockDim.x) s += partial[i];
    s = block_sum_double(s);
    if (threadIdx.x == 0) *out = s;
}

#define NORM_MAX_BLOCKS 1024

// sqrt(sum x^2) in double; scratch holds NORM_MAX_BLOCKS + 1 doubles. Synchronizes.
static double vector_norm(const float* x, size_t n, double* scratch) {
    const int block = 512;
    size_t want = (n + (size_t)block * 8 - 1) / ((size_t)block * 8);
    int blocks = (int)(want < 1 ? 1 : (want > NORM_MAX_BLOCKS ? NORM_MAX_BLOCKS : want));
    norm_partial_kernel<<<blocks, block>>>(scratch + 1, x, n);
    launchCheck();
    norm_final_kernel<<<1, 1024>>>(scratch, scratch + 1, blocks);
    launchCheck();
    double sumsq = 0.0;
    cudaCheck(cudaMemcpy(&sumsq, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    return sqrt(sumsq);
}

// ----------------------------------------------------------------------------
// the model

#define NUM_ACTIVATION_TENSORS 19
typedef struct {
    float* encoded;   // (B, T, C)
    float* ln1;       // (L, B, T, C)
    float* ln1_mean;  // (L, B, T)
    float* ln1_rstd;  // (L, B, T)
    float* qkv;       // (L, B, T, 3*C)
    float* atty;      // (L, B, T, C)
    float* att_lse;   // (L, B, NH, T) log-sum-exp of each attention row
    float* residual2; // (L, B, T, C)
    float* ln2;       // (L, B, T, C)
    float* ln2_mean;  // (L, B, T)
    float* ln2_rstd;  // (L, B, T)
    float* fch;       // (L, B, T, 4*C)
    float* fch_gelu;  // (L, B, T, 4*C)
    float* residual3; // (L, B, T, C)
    float* lnf;       // (B, T, C)
    float* lnf_mean;  // (B, T)
    float* lnf_rstd;  // (B, T)
    float* logits;    // (B, T, Vp): logits, then (backward) dlogits
    float* losses;    // (B, T)
} ActivationTensors;

// Device memory of the activations, each tensor rounded up to 64 floats so every
// tensor starts 256-byte aligned (the float4 kernels need 16).
static float* alloc_activations(ActivationTensors* a, const GPT2Config* cfg, int B, int T, size_t* total_out) {
    size_t C = (size_t)cfg->channels, NH = (size_t)cfg->num_heads, L = (size_t)cfg->num_layers;
    size_t Vp = (size_t)cfg->padded_vocab_size, BT = (size_t)B * (size_t)T;
    size_t sizes[NUM_ACTIVATION_TENSORS] = {
        BT * C, L * BT * C, L * BT, L * BT, L * BT * 3 * C, L * BT * C, L * NH * BT, L * BT * C, L * BT * C,
        L * BT, L * BT, L * BT * 4 * C, L * BT * 4 * C, L * BT * C, BT * C, BT, BT, BT * Vp, BT,
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
    float* m_host;              // (P) host staging for the training state
    float* v_host;              // (P)
    // research regularizers (llmc/regularizers.h), as in train_gpt2.c
    uint64_t seed;              // the run's --seed: the dropout masks and weight noise derive from it
    DropoutConfig dropout;      // --dropout (p = 0: off)
    int dropout_step;           // > 0: forward/backward are training step dropout_step, with dropout
    float* init_memory;         // (P) device: the parameters before step 1 (--decay-toward-init), else NULL
    float* init_host;           // (P) host copy of init_memory, for the training state
    float* clean_memory;        // (P) device: the clean parameters during a noisy step (--weight-noise), else NULL
    // results of the last forward with targets
    float mean_loss;
    double loss_sum;
    size_t num_scored;
    int num_correct;
    int num_examples;
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

// Allocates gradients, optimizer state, activations and scratch for batches up to (B, T).
static void gpt2_allocate(GPT2* model, int B, int T, int attention_kind, int keep_logits) {
    const GPT2Config* cfg = &model->config;
    size_t P = model->num_parameters, C = (size_t)cfg->channels, BT = (size_t)B * T;
    int NH = cfg->num_heads, HS = cfg->channels / cfg->num_heads;
    model->grads_memory = (float*)gpuMalloc(P * sizeof(float), "the gradients");
    point_parameters(&model->grads, model->grads_memory, model->param_sizes);
    model->m_memory = (float*)gpuMalloc(P * sizeof(float), "AdamW's first moment");
    model->v_memory = (float*)gpuMalloc(P * sizeof(float), "AdamW's second moment");
    cudaCheck(cudaMemset(model->m_memory, 0, P * sizeof(float)));
    cudaCheck(cudaMemset(model->v_memory, 0, P * sizeof(float)));
    model->B = B;
    model->T = T;
    model->acts_memory = alloc_activations(&model->acts, cfg, B, T, &model->num_activations);
    model->dresidual = (float*)gpuMalloc(BT * C * sizeof(float), "the residual gradient");
    model->dbuf = (float*)gpuMalloc(BT * C * sizeof(float), "an activation gradient");
    model->dbuf4 = (float*)gpuMalloc(BT * 4 * C * sizeof(float), "the MLP activation gradient");
    model->mm_out = (float*)gpuMalloc(BT * C * sizeof(float), "a matmul output");
    model->col_scratch = (float*)gpuMalloc((size_t)ceil_div(BT, ROWS_PER_CHUNK) * 4 * C * sizeof(float),
                                           "the column-sum scratch");
    model->norm_scratch = (double*)gpuMalloc((NORM_MAX_BLOCKS + 1) * sizeof(double), "the norm scratch");
    AttentionState* at = &model->attn;
    memset(at, 0, sizeof(*at));
    at->kind = attention_kind;
    if (attention_kind == ATTENTION_FUSED || attention_kind == ATTENTION_FUSED_TF32) {
        at->Dvec = (float*)gpuMalloc(BT * NH * sizeof(float), "the attention backward scratch");
        if (attention_kind == ATTENTION_FUSED) attention_fused_setup(HS);
        else if (HS == 16) attention_tc_setup_hs<16>();
        else if (HS == 32) attention_tc_setup_hs<32>();
        else if (HS == 64) attention_tc_setup_hs<64>();
        else fatal("internal: tensor-core attention does not support HS=%d", HS);
    } else {
        size_t n = BT * C, nn = BT * (size_t)NH * T;
        AttentionCublasScratch* s = &at->cublas;
        float** small[7] = {&s->q, &s->k, &s->v, &s->y, &s->dq, &s->dk, &s->dv};
        for (int i = 0; i < 7; i++) *small[i] = (float*)gpuMalloc(n * sizeof(float), "the attention head buffers");
        s->att = (float*)gpuMalloc(nn * sizeof(float), "the (B, NH, T, T) attention matrix");
        s->datt = (float*)gpuMalloc(nn * sizeof(float), "the (B, NH, T, T) attention gradient");
    }
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
    model->m_host = (float*)mallocCheck(P * sizeof(float));
    model->v_host = (float*)mallocCheck(P * sizeof(float));
}

static void gpt2_free(GPT2* model) {
    float* dev[] = {model->params_memory, model->grads_memory, model->m_memory, model->v_memory, model->acts_memory,
                    model->dresidual, model->dbuf, model->dbuf4, model->mm_out, model->col_scratch, model->d_dloss,
                    model->attn.Dvec, model->attn.cublas.q, model->attn.cublas.k, model->attn.cublas.v,
                    model->attn.cublas.y, model->attn.cublas.dq, model->attn.cublas.dk, model->attn.cublas.dv,
                    model->attn.cublas.att, model->attn.cublas.datt, model->init_memory, model->clean_memory};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
    int* idev[] = {model->d_inputs, model->d_targets, model->d_argmax, model->buckets.d_token,
                   model->buckets.d_start, model->buckets.d_pos};
    for (size_t i = 0; i < sizeof(idev) / sizeof(idev[0]); i++) cudaCheck(cudaFree(idev[i]));
    cudaCheck(cudaFree(model->norm_scratch));
    free(model->params_host);
    free(model->dloss);
    free(model->losses);
    free(model->argmax);
    free(model->buckets.token);
    free(model->buckets.start);
    free(model->buckets.pos);
    free(model->buckets.count);
    free(model->saved_logits);
    free(model->sample_logits);
    free(model->m_host);
    free(model->v_host);
    free(model->init_host);
    memset(model, 0, sizeof(*model));
}

// The key of one dropout site of the current training step (llmc/regularizers.h).
static uint64_t site_key(const GPT2* model, int layer, int site) {
    return dropout_key(model->seed, model->dropout_step, layer, site);
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
    const DropoutConfig* drop = dropout_for_step(&model->dropout, model->dropout_step);
    encoder_forward(a.encoded, model->d_inputs, p.wte, p.wpe, B, T, C);
    if (drop) dropout_apply(a.encoded, a.encoded, BTC, site_key(model, -1, DROPOUT_SITE_EMBED), drop);
    for (int l = 0; l < L; l++) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        float* ln1 = a.ln1 + l * BTC;
        float* ln1_mean = a.ln1_mean + l * BT;
        float* ln1_rstd = a.ln1_rstd + l * BT;
        float* qkv = a.qkv + l * BTC * 3;
        float* atty = a.atty + l * BTC;
        float* lse = a.att_lse + l * BT * NH;
        float* residual2 = a.residual2 + l * BTC;
        float* ln2 = a.ln2 + l * BTC;
        float* ln2_mean = a.ln2_mean + l * BT;
        float* ln2_rstd = a.ln2_rstd + l * BT;
        float* fch = a.fch + l * BTC * 4;
        float* fch_gelu = a.fch_gelu + l * BTC * 4;
        float* residual3 = a.residual3 + l * BTC;
        layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w + l * c, p.ln1b + l * c, (int)BT, C);
        matmul_forward(qkv, ln1, p.qkvw + l * 3 * c * c, qkvb ? qkvb + l * 3 * c : NULL, (int)BT, C, 3 * C);
        attention_forward(atty, lse, qkv, &model->attn, drop, drop ? site_key(model, l, DROPOUT_SITE_ATTN) : 0,
                          B, T, NH, HS);
        // the projections' biases are added by the kernels after them (fused passes)
        matmul_forward(model->mm_out, atty, p.attprojw + l * c * c, NULL, (int)BT, C, C);
        if (drop) {
            residual_bias_dropout_forward(residual2, residual, model->mm_out, p.attprojb + l * c, BTC, C,
                                          site_key(model, l, DROPOUT_SITE_ATTN_PROJ), drop);
        } else {
            residual_bias_forward(residual2, residual, model->mm_out, p.attprojb + l * c, BTC, C);
        }
        layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, p.ln2w + l * c, p.ln2b + l * c, (int)BT, C);
        matmul_forward(fch, ln2, p.fcw + l * 4 * c * c, NULL, (int)BT, C, 4 * C);
        bias_gelu_forward(fch_gelu, fch, p.fcb + l * 4 * c, BTC * 4, 4 * C);
        matmul_forward(model->mm_out, fch_gelu, p.fcprojw + l * 4 * c * c, NULL, (int)BT, 4 * C, C);
        if (drop) {
            residual_bias_dropout_forward(residual3, residual2, model->mm_out, p.fcprojb + l * c, BTC, C,
                                          site_key(model, l, DROPOUT_SITE_MLP), drop);
        } else {
            residual_bias_forward(residual3, residual2, model->mm_out, p.fcprojb + l * c, BTC, C);
        }
    }
    layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.residual3 + (size_t)(L - 1) * BTC, p.lnfw, p.lnfb, (int)BT, C);
}

// Full forward on host inputs (B, T). With targets: the loss (mean over all
// positions, or over mask == 1 positions when mask != NULL), the example
// accuracy with a mask, and (with_backward) the dlogits over acts.logits.
static void gpt2_forward(GPT2* model, const int* inputs, const int* targets, const int* mask, int B, int T,
                         int with_backward) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    int N = B * T;
    // every host-to-device copy first: a copy from pageable memory waits for the GPU to drain
    cudaCheck(cudaMemcpy(model->d_inputs, inputs, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    size_t scored = 0;
    if (targets != NULL) {
        // the loss weights, exactly as train_gpt2.c computes them
        for (int n = 0; n < N; n++) scored += mask ? (size_t)(mask[n] != 0) : 1;
        for (int n = 0; n < N; n++) {
            int counts = mask ? mask[n] != 0 : 1;
            model->dloss[n] = counts && scored > 0 ? 1.0f / (float)scored : 0.0f;
        }
        cudaCheck(cudaMemcpy(model->d_targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(model->d_dloss, model->dloss, (size_t)N * sizeof(float), cudaMemcpyHostToDevice));
    }
    gpt2_forward_trunk(model, B, T);
    ActivationTensors a = model->acts;
    matmul_forward(a.logits, a.lnf, model->params.wte, NULL, N, C, Vp);
    if (model->saved_logits) {
        cudaCheck(cudaMemcpy(model->saved_logits, a.logits, (size_t)N * Vp * sizeof(float), cudaMemcpyDeviceToHost));
    }
    if (targets == NULL) return;
    fused_classifier_kernel<<<N, 1024>>>(a.logits, a.losses, model->d_argmax, model->d_targets, model->d_dloss, V, Vp,
                                         with_backward);
    launchCheck();
    cudaCheck(cudaMemcpy(model->losses, a.losses, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(model->argmax, model->d_argmax, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    for (int n = 0; n < N; n++) {
        int counts = mask ? mask[n] != 0 : 1;
        if (counts) sum += model->losses[n];
    }
    model->loss_sum = sum;
    model->num_scored = scored;
    model->mean_loss = scored > 0 ? (float)(sum / (double)scored) : 0.0f;
    model->num_correct = 0;
    model->num_examples = 0;
    if (mask) {
        for (int b = 0; b < B; b++) {
            int any = 0, right = 1;
            for (int t = 0; t < T; t++) {
                int n = b * T + t;
                if (mask[n]) {
                    any = 1;
                    if (model->argmax[n] != targets[n]) right = 0;
                }
            }
            model->num_examples += any;
            model->num_correct += any && right;
        }
    }
}

static void gpt2_zero_grad(GPT2* model) {
    cudaCheck(cudaMemset(model->grads_memory, 0, model->num_parameters * sizeof(float)));
}

// Gradients of the mean loss of the last gpt2_forward (with_backward) with
// respect to all parameters, accumulated into model->grads. The exact reverse
// of gpt2_forward_trunk; inputs are the host token ids of that forward.
static void gpt2_backward(GPT2* model, const int* inputs, int B, int T) {
    const GPT2Config* cfg = &model->config;
    int C = cfg->channels, NH = cfg->num_heads, L = cfg->num_layers, HS = C / NH, Vp = cfg->padded_vocab_size;
    ParameterTensors p = model->params, g = model->grads;
    ActivationTensors a = model->acts;
    size_t BT = (size_t)B * T, BTC = BT * C, c = (size_t)C;
    float* dqkvb = cfg->no_qkv_bias ? NULL : g.qkvb;
    const DropoutConfig* drop = dropout_for_step(&model->dropout, model->dropout_step);
    float* dres = model->dresidual;
    float* scr = model->col_scratch;
    cudaCheck(cudaMemset(dres, 0, BTC * sizeof(float)));
    // a.logits holds dlogits (the classifier wrote them)
    matmul_backward(model->dbuf, g.wte, NULL, scr, a.logits, a.lnf, p.wte, (int)BT, C, Vp);
    layernorm_backward(dres, g.lnfw, g.lnfb, scr, model->dbuf, a.residual3 + (size_t)(L - 1) * BTC, p.lnfw,
                       a.lnf_mean, a.lnf_rstd, (int)BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const float* residual = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * BTC;
        // dres holds d(residual3): it is also d(fcproj out) (times the dropout factors, into
        // mm_out, with dropout), and the start of d(residual2)
        const float* dproj = dres;
        if (drop) {
            dropout_apply(model->mm_out, dres, BTC, site_key(model, l, DROPOUT_SITE_MLP), drop);
            dproj = model->mm_out;
        }
        matmul_backward(model->dbuf4, g.fcprojw + l * 4 * c * c, g.fcprojb + l * c, scr, dproj,
                        a.fch_gelu + l * BTC * 4, p.fcprojw + l * 4 * c * c, (int)BT, 4 * C, C);
        gelu_backward(model->dbuf4, a.fch + l * BTC * 4, model->dbuf4, BTC * 4);
        matmul_backward(model->dbuf, g.fcw + l * 4 * c * c, g.fcb + l * 4 * c, scr, model->dbuf4,
                        a.ln2 + l * BTC, p.fcw + l * 4 * c * c, (int)BT, C, 4 * C);
        layernorm_backward(dres, g.ln2w + l * c, g.ln2b + l * c, scr, model->dbuf, a.residual2 + l * BTC,
                           p.ln2w + l * c, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, (int)BT, C);
        // dres holds d(residual2): also d(attproj out) (with dropout: times its factors), and
        // the start of d(residual)
        dproj = dres;
        if (drop) {
            dropout_apply(model->mm_out, dres, BTC, site_key(model, l, DROPOUT_SITE_ATTN_PROJ), drop);
            dproj = model->mm_out;
        }
        matmul_backward(model->dbuf, g.attprojw + l * c * c, g.attprojb + l * c, scr, dproj, a.atty + l * BTC,
                        p.attprojw + l * c * c, (int)BT, C, C);
        attention_backward(model->dbuf4, model->dbuf, a.qkv + l * BTC * 3, a.atty + l * BTC, a.att_lse + l * BT * NH,
                           &model->attn, drop, drop ? site_key(model, l, DROPOUT_SITE_ATTN) : 0, B, T, NH, HS);
        matmul_backward(model->dbuf, g.qkvw + l * 3 * c * c, dqkvb ? dqkvb + l * 3 * c : NULL, scr, model->dbuf4,
                        a.ln1 + l * BTC, p.qkvw + l * 3 * c * c, (int)BT, C, 3 * C);
        layernorm_backward(dres, g.ln1w + l * c, g.ln1b + l * c, scr, model->dbuf, residual, p.ln1w + l * c,
                           a.ln1_mean + l * BT, a.ln1_rstd + l * BT, (int)BT, C);
    }
    if (drop) dropout_apply(dres, dres, BTC, site_key(model, -1, DROPOUT_SITE_EMBED), drop);
    encoder_backward(g.wte, g.wpe, dres, inputs, &model->buckets, B, T, C, Vp);
}

// One AdamW step t (1-based), the arithmetic of train_gpt2.c's gpt2_adamw_update
// (see there, decay toward the initialization included); one launch per tensor
// for its weight decay; qkvb is skipped when the model has no QKV bias.
static void gpt2_adamw_update(GPT2* model, const AdamWSettings* s, float lr, float grad_scale, int t) {
    double bc1 = 1.0 - pow((double)s->beta1, (double)t);
    double bc2_sqrt = sqrt(1.0 - pow((double)s->beta2, (double)t));
    float step_size = (float)((double)lr / bc1);
    float b2s = (float)bc2_sqrt;
    size_t offset = 0;
    const int block = 512;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t n = model->param_sizes[i];
        if (i == P_QKVB && model->config.no_qkv_bias) { offset += n; continue; }
        float wd = (s->decay_matrices_only && !param_is_matrix(i)) ? 0.0f : s->weight_decay;
        float decay = 1.0f - lr * wd, lr_wd = lr * wd;
        const float* init = s->decay_toward_init ? model->init_memory + offset : NULL;
        adamw_kernel<<<ceil_div(n, block), block>>>(model->params_memory + offset, model->m_memory + offset,
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
    uint64_t key = noise_key(model->seed, step);
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
    model->dropout_step = step;
    gpt2_forward(model, inputs, targets, mask, B, T, 1);
    gpt2_zero_grad(model);
    gpt2_backward(model, inputs, B, T);
    model->dropout_step = 0;
    if (weight_noise > 0.0f) {
        cudaCheck(cudaMemcpy(model->params_memory, model->clean_memory, bytes, cudaMemcpyDeviceToDevice));
    }
}

// One training step: forward and backward (gpt2_forward_backward_step), global norm, clip,
// AdamW. Returns with r->loss or r->grad_norm not finite (and the parameters untouched) when
// training diverged.
static void gpt2_train_step(GPT2* model, const int* inputs, const int* targets, const int* mask, int B, int T,
                            int step, const LrSchedule* sched, const AdamWSettings* opt, float grad_clip,
                            float weight_noise, StepResult* r) {
    gpt2_forward_backward_step(model, inputs, targets, mask, B, T, step, weight_noise);
    double norm = vector_norm(model->grads_memory, model->num_parameters, model->norm_scratch);
    r->loss = model->mean_loss;
    r->grad_norm = (float)norm;
    r->lr = lr_at(sched, step);
    r->num_correct = model->num_correct;
    r->num_examples = model->num_examples;
    r->grad_scale = 1.0f;
    if (!isfinite(r->loss) || !isfinite(norm)) return;
    if (grad_clip > 0.0f && norm > (double)grad_clip) r->grad_scale = (float)((double)grad_clip / norm);
    gpt2_adamw_update(model, opt, r->lr, r->grad_scale, step);
    cudaCheck(cudaDeviceSynchronize());
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
    matmul_forward(model->acts.logits, model->acts.lnf + (size_t)(len - 1) * C, model->params.wte, NULL, 1, C, Vp);
    cudaCheck(cudaMemcpy(model->sample_logits, model->acts.logits, (size_t)Vp * sizeof(float), cudaMemcpyDeviceToHost));
    return model->sample_logits;
}

// ----------------------------------------------------------------------------
// main

// Exits 1 with a clear message when there is no usable GPU; fills prop.
static void require_gpu(cudaDeviceProp* prop) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        fflush(stdout);
        fprintf(stderr, "error: no CUDA GPU is available (%s). train_gpt2fp32cu needs an NVIDIA GPU with a "
                "working driver; on this machine use the CPU trainer ./train_gpt2 (same flags).\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "the device count is 0");
        exit(1);
    }
    cudaCheck(cudaSetDevice(0));
    cudaCheck(cudaGetDeviceProperties(prop, 0));
}

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
    require_gpu(&g_prop);
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
static void cuda_prepare(void* m, const TrainConfig* cfg, int B, int T, int keep_logits, const char* model_path) {
    (void)B, (void)T, (void)keep_logits, (void)model_path;
    CudaModel* cm = (CudaModel*)m;
    const GPT2Config* mc = &cm->gpt2.config;
    const cudaDeviceProp* prop = &g_prop;
    const char* choice = g_attention_choice;
    int HS = mc->channels / mc->num_heads;
    size_t fused_smem = attention_fused_smem_bytes(HS), tc_smem = attention_tc_smem_bytes(HS);
    int fused_ok = fused_smem > 0 && fused_smem <= prop->sharedMemPerBlockOptin;
    int tc_ok = prop->major >= 8 && tc_smem > 0 && tc_smem <= prop->sharedMemPerBlockOptin;
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

static void cuda_allocate(void* m, const TrainConfig* cfg, int B, int T, int keep_logits) {
    CudaModel* cm = (CudaModel*)m;
    GPT2* model = &cm->gpt2;
    cublasCheck(cublasCreate(&g_cublas));
    cublasCheck(cublasSetMathMode(g_cublas, g_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    gpt2_allocate(model, B, T, cm->attention_kind, keep_logits);
    model->seed = (uint64_t)cfg->seed;
    model->dropout = dropout_config(cfg->dropout);
    size_t bytes = model->num_parameters * sizeof(float);
    if (cfg->weight_noise > 0.0f) model->clean_memory = (float*)gpuMalloc(bytes, "the clean parameters (--weight-noise)");
    if (cfg->decay_toward_init) {
        // the parameters before step 1; a resumed run reads them from its state file
        model->init_memory = (float*)gpuMalloc(bytes, "the initial parameters (--decay-toward-init)");
        model->init_host = (float*)mallocCheck(bytes);
        memcpy(model->init_host, model->params_host, bytes);
        cudaCheck(cudaMemcpy(model->init_memory, model->init_host, bytes, cudaMemcpyHostToDevice));
    }
    if (keep_logits) cm->grads_host = (float*)mallocCheck(bytes);
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

static void cuda_forward(void* m, const int* inputs, const int* targets, const int* mask, int B, int T,
                         BatchResult* r) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    gpt2_forward(model, inputs, targets, mask, B, T, 0);
    r->loss_sum = model->loss_sum;
    r->num_scored = model->num_scored;
    r->num_correct = model->num_correct;
    r->num_examples = model->num_examples;
}

static void cuda_train_step(void* m, const int* inputs, const int* targets, const int* mask, int B, int T, int step,
                            const LrSchedule* sched, const AdamWSettings* opt, float grad_clip, float weight_noise,
                            StepResult* r) {
    gpt2_train_step(&((CudaModel*)m)->gpt2, inputs, targets, mask, B, T, step, sched, opt, grad_clip, weight_noise, r);
}

static double cuda_param_norm(void* m) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    return vector_norm(model->params_memory, model->num_parameters, model->norm_scratch);
}

static const float* cuda_next_token_logits(void* m, const int* tokens, int n) {
    return gpt2_next_token_logits(&((CudaModel*)m)->gpt2, tokens, n);
}

static void cuda_parity_step(void* m, const int* inputs, const int* targets, const int* mask, int B, int T,
                             float weight_noise, float* loss, const float** logits, const float** grads) {
    CudaModel* cm = (CudaModel*)m;
    GPT2* model = &cm->gpt2;
    gpt2_forward_backward_step(model, inputs, targets, mask, B, T, 1, weight_noise);
    cudaCheck(cudaMemcpy(cm->grads_host, model->grads_memory, model->num_parameters * sizeof(float),
                         cudaMemcpyDeviceToHost));
    *loss = model->mean_loss;
    *logits = model->saved_logits;
    *grads = cm->grads_host;
}

// The host mirrors; with download, the parameters and AdamW moments are copied from the GPU first
// (the initial parameters never change on the GPU: init_host stays their copy).
static HostTensors cuda_host_tensors(void* m, int download) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    if (download) {
        size_t bytes = model->num_parameters * sizeof(float);
        cudaCheck(cudaMemcpy(model->params_host, model->params_memory, bytes, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(model->m_host, model->m_memory, bytes, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(model->v_host, model->v_memory, bytes, cudaMemcpyDeviceToHost));
    }
    HostTensors h = {model->params_host, model->m_host, model->v_host, model->init_host};
    return h;
}

static void cuda_upload_state(void* m) {
    GPT2* model = &((CudaModel*)m)->gpt2;
    size_t bytes = model->num_parameters * sizeof(float);
    cudaCheck(cudaMemcpy(model->m_memory, model->m_host, bytes, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(model->v_memory, model->v_host, bytes, cudaMemcpyHostToDevice));
    if (model->init_memory) cudaCheck(cudaMemcpy(model->init_memory, model->init_host, bytes, cudaMemcpyHostToDevice));
}

static void cuda_destroy(void* m) {
    CudaModel* cm = (CudaModel*)m;
    int allocated = cm->gpt2.grads_memory != NULL;
    gpt2_free(&cm->gpt2);
    if (allocated) cublasCheck(cublasDestroy(g_cublas));
    free(cm->grads_host);
    free(cm);
}

int main(int argc, char** argv) {
    static const TrainerBackend cuda = {
        "train_gpt2fp32cu", " --tf32 0", CUDA_SPECS, (int)(sizeof(CUDA_SPECS) / sizeof(CUDA_SPECS[0])),
        cuda_configure, cuda_load, cuda_prepare, cuda_allocate, cuda_print_rows, cuda_log_config, cuda_hardware,
        cuda_forward, cuda_train_step, cuda_param_norm, cuda_next_token_logits, cuda_parity_step,
        cuda_host_tensors, cuda_upload_state, cuda_destroy,
    };
    return train_main(argc, argv, &cuda);
}
