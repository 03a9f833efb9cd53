// llmc/attention.cuh: causal multi-head self-attention, forward and backward, in the three
// versions of dev/cuda/attention_forward.cu and attention_backward.cu.
// defines: ATTENTION_CUBLAS, ATTENTION_FUSED, ATTENTION_FUSED_TF32, AttentionState,
//          attention_forward, attention_backward;
//          version 1: permute_qkv_kernel, merge_heads_kernel, split_heads_kernel, merge_qkv_kernel,
//          softmax_causal_kernel, softmax_causal_backward_kernel, AttentionCublasScratch,
//          attention_forward_cublas, attention_backward_cublas;
//          version 2: load_vec, mma_tile, load_rows, group16_max, group16_sum,
//          attention_forward_fused_kernel, attention_backward_D_kernel,
//          attention_backward_dkdv_kernel, attention_backward_dq_kernel, attention_fused_smem_bytes,
//          attention_fused_setup, attention_forward_fused_hs, attention_backward_fused_hs;
//          version 3: FragA, FragBRow, FragBCol, FragC, load_tf32, mma_abt, mma_xm,
//          attention_forward_tc_kernel, attention_backward_dkdv_tc_kernel,
//          attention_backward_dq_tc_kernel, attention_tc_smem_bytes, attention_tc_setup_hs,
//          attention_tc_setup, attention_forward_tc_hs, attention_backward_tc_hs;
//          attention_kind_supported, attention_state_alloc, attention_state_free
//
// Shapes: qkv (B,T,3C) per token [q | k | v], head h at [h*HS, (h+1)*HS); out (B,T,C);
// lse (B,NH,T) the log-sum-exp of each row of scaled scores, saved for the backward pass.
// attention_backward WRITES dqkv (=). Version 1 (ATTENTION_CUBLAS): cuBLAS strided-batched
// products and softmax kernels through (B,NH,T,T) buffers, recomputing the attention matrix in
// the backward pass; the only version with dropout on the attention weights. Version 2
// (ATTENTION_FUSED): flash-style fused kernels in fp32 on the SIMT cores, HS in {16, 32, 64, 128}.
// Version 3 (ATTENTION_FUSED_TF32): version 2's algorithm on TF32 tensor cores (WMMA),
// sm_80+, HS in {16, 32, 64}. Versions 2 and 3 never store the T x T matrix and need
// attention_fused_setup / attention_tc_setup (dynamic shared memory limits) first;
// attention_kind_supported says whether a version runs for a head size on a GPU.
#ifndef LLMC_ATTENTION_CUH
#define LLMC_ATTENTION_CUH

#include <mma.h>

#include "cuda_common.cuh"
#include "matmul.cuh"
#include "regularizers.cuh"
#include "utils.h"

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

// raises the dynamic shared memory limit of the tensor-core kernels for HS (once)
static void attention_tc_setup(int HS) {
    switch (HS) {
        case 16: attention_tc_setup_hs<16>(); break;
        case 32: attention_tc_setup_hs<32>(); break;
        case 64: attention_tc_setup_hs<64>(); break;
        default: fatal("internal: tensor-core attention does not support HS=%d", HS);
    }
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

// the attention kinds, numbered as their versions in dev/cuda/attention_forward.cu and
// attention_backward.cu
#define ATTENTION_CUBLAS 1      // version 1: strided-batched SGEMMs + softmax kernels
#define ATTENTION_FUSED 2       // version 2: fp32 on the SIMT cores
#define ATTENTION_FUSED_TF32 3  // version 3: TF32 tensor cores

// Whether attention version `kind` runs for head size HS on this GPU: its head sizes, the
// shared memory per block the GPU allows, and sm_80+ for the tensor cores of version 3.
static int attention_kind_supported(int kind, int HS, const cudaDeviceProp* prop) {
    if (kind == ATTENTION_CUBLAS) return 1;
    size_t smem = kind == ATTENTION_FUSED ? attention_fused_smem_bytes(HS) : attention_tc_smem_bytes(HS);
    if (kind == ATTENTION_FUSED_TF32 && prop->major < 8) return 0;
    return smem > 0 && smem <= prop->sharedMemPerBlockOptin;
}

typedef struct {
    int kind;                      // ATTENTION_*
    float* Dvec;                   // (B, NH, T) fused backward
    AttentionCublasScratch cublas; // version 1 buffers (NULL when fused)
} AttentionState;

// The buffers of attention version `kind` for batches up to (B, T) (GPU memory checked), after
// raising the shared memory limits of the fused kernels for HS.
static void attention_state_alloc(AttentionState* at, int kind, int B, int T, int NH, int HS) {
    size_t BT = (size_t)B * T, C = (size_t)NH * HS;
    memset(at, 0, sizeof(*at));
    at->kind = kind;
    if (kind == ATTENTION_FUSED || kind == ATTENTION_FUSED_TF32) {
        at->Dvec = (float*)gpuMalloc(BT * NH * sizeof(float), "the attention backward scratch");
        if (kind == ATTENTION_FUSED) attention_fused_setup(HS);
        else attention_tc_setup(HS);
    } else {
        size_t n = BT * C, nn = BT * (size_t)NH * T;
        AttentionCublasScratch* s = &at->cublas;
        float** small[7] = {&s->q, &s->k, &s->v, &s->y, &s->dq, &s->dk, &s->dv};
        for (int i = 0; i < 7; i++) *small[i] = (float*)gpuMalloc(n * sizeof(float), "the attention head buffers");
        s->att = (float*)gpuMalloc(nn * sizeof(float), "the (B, NH, T, T) attention matrix");
        s->datt = (float*)gpuMalloc(nn * sizeof(float), "the (B, NH, T, T) attention gradient");
    }
}

static void attention_state_free(AttentionState* at) {
    AttentionCublasScratch* s = &at->cublas;
    float* dev[] = {at->Dvec, s->q, s->k, s->v, s->y, s->dq, s->dk, s->dv, s->att, s->datt};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) cudaCheck(cudaFree(dev[i]));
    memset(at, 0, sizeof(*at));
}

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

#endif  // LLMC_ATTENTION_CUH
