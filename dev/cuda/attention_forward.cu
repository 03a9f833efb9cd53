// Workbench: causal multi-head self-attention forward.
//   qkv (B,T,3C): per token [q | k | v], each C = NH*HS wide, head h at [h*HS, (h+1)*HS)
//   out (B,T,C):  out[b,t,h*HS+d] = sum_{s<=t} softmax_s(q_t . k_s / sqrt(HS)) v[s,d]
//   lse (B,NH,T): log-sum-exp of each row of scaled scores (saved for the backward pass)
// Versions:
//   1: cuBLAS. Permute qkv into q, k, v (B,NH,T,HS); preatt = q k^T (strided-batched
//      SGEMM with alpha = 1/sqrt(HS)) into a (B,NH,T,T) buffer; a warp-per-row causal
//      softmax kernel (in place, also writes lse); y = att v (SGEMM); unpermute into out.
//      Moves the whole T x T matrix through memory four times.
//   2: fused, flash-attention style, fp32 FMA on the SIMT cores: a block of 256 threads
//      owns 64 query rows of one (b,h) and walks the key tiles of 64 up to the diagonal,
//      keeping a running max and sum per row (online softmax); the T x T matrix never
//      leaves shared memory. Each thread computes a 4x4 tile of scores and a 4 x HS/16
//      tile of the output from shared memory (float4 loads). HS in {16, 32, 64, 128}.
//   3: version 2's algorithm on the TF32 tensor cores (WMMA m16n16k8): 4 warps own 16
//      query rows each; S = Q K^T and P V are WMMA products (inputs rounded to TF32,
//      fp32 accumulation); S goes through shared memory for the online softmax, which a
//      pair of lanes runs per row; the output accumulates in registers. sm_80+,
//      HS in {16, 32, 64}. TF32 rounding: compare with a looser tolerance.
// Arithmetic: 4*B*NH*T*T*HS FLOPs for the two products if computed in full (version 1),
// about half that with the causal skip (version 2).
// Build: make cuda-workbenches; run: dev/cuda/bin/attention_forward [version] [--check-only]
#include "common.h"

#include <mma.h>

// ----------------------------------------------------------------------------
// CPU reference (double)

static void attention_forward_cpu(float* out, float* lse, const float* qkv, int B, int T, int NH, int HS) {
    int C = NH * HS;
    double scale = 1.0 / sqrt((double)HS);
    std::vector<double> w(T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * HS;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * HS;
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++) dot += (double)q[d] * k[d];
                    w[s] = dot * scale;
                    mx = fmax(mx, w[s]);
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { w[s] = exp(w[s] - mx); sum += w[s]; }
                float* o = out + ((size_t)b * T + t) * C + h * HS;
                for (int d = 0; d < HS; d++) {
                    double acc = 0.0;
                    for (int s = 0; s <= t; s++) acc += w[s] * qkv[((size_t)b * T + s) * 3 * C + 2 * C + h * HS + d];
                    o[d] = (float)(acc / sum);
                }
                lse[((size_t)b * NH + h) * T + t] = (float)(mx + log(sum));
            }
        }
    }
}

// ----------------------------------------------------------------------------
// version 1: cuBLAS products + softmax kernel

// qkv (B,T,3C) -> q, k, v (B,NH,T,HS)
__global__ void permute_kernel(float* q, float* k, float* v, const float* qkv, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t N = (size_t)B * NH * T * HS;
    if (idx >= N) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    int C = NH * HS;
    size_t src = ((size_t)b * T + t) * 3 * C + h * HS + d;
    q[idx] = qkv[src];
    k[idx] = qkv[src + C];
    v[idx] = qkv[src + 2 * C];
}

// y (B,NH,T,HS) -> out (B,T,C)
__global__ void unpermute_kernel(float* out, const float* y, int B, int T, int NH, int HS) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t N = (size_t)B * NH * T * HS;
    if (idx >= N) return;
    int d = (int)(idx % HS);
    int t = (int)((idx / HS) % T);
    int h = (int)((idx / ((size_t)HS * T)) % NH);
    int b = (int)(idx / ((size_t)HS * T * NH));
    out[((size_t)b * T + t) * NH * HS + h * HS + d] = y[idx];
}

// Causal softmax over each row of att (B*NH*T rows of T), in place: entries s > t
// become 0 (the att @ v product reads whole rows). Row r = (b,h,t). One warp per row.
// Also writes lse[r] = max + log(sum) (the scale is already in the scores).
__global__ void softmax_causal_kernel(float* att, float* lse, int num_rows, int T) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= num_rows) return;  // uniform per warp
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
    if (lane == 0) lse[row] = mx + logf(sum);
}

// scratch: q, k, v, y each (B,NH,T,HS); att (B,NH,T,T)
static void attention_forward1(cublasHandle_t handle, float* out, float* lse, float* q, float* k, float* v,
                               float* y, float* att, const float* qkv, int B, int T, int NH, int HS,
                               int block_size) {
    size_t N = (size_t)B * NH * T * HS;
    permute_kernel<<<ceil_div(N, block_size), block_size>>>(q, k, v, qkv, B, T, NH, HS);
    launchCheck();
    const float alpha = 1.0f / sqrtf((float)HS), one = 1.0f, zero = 0.0f;
    // column-major view: att^T (T_keys x T_queries) = k (as HS x T)^T @ q (HS x T)
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, T, T, HS, &alpha,
                                          k, HS, (long long)T * HS, q, HS, (long long)T * HS, &zero,
                                          att, T, (long long)T * T, B * NH));
    int rows = B * NH * T;
    softmax_causal_kernel<<<ceil_div(rows, block_size / 32), block_size>>>(att, lse, rows, T);
    launchCheck();
    // y (as HS x T) = v (HS x T) @ att^T (T x T)
    cublasCheck(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, HS, T, T, &one,
                                          v, HS, (long long)T * HS, att, T, (long long)T * T, &zero,
                                          y, HS, (long long)T * HS, B * NH));
    unpermute_kernel<<<ceil_div(N, block_size), block_size>>>(out, y, B, T, NH, HS);
    launchCheck();
}

// ----------------------------------------------------------------------------
// version 2: fused (flash-attention style) on the SIMT cores

// acc[i][j] += sum_{k<K} A[k*lda + m0 + i] * B[k*ldb + n0 + j] over shared memory:
// both operands are stored reduction-index-major, so a thread's TM (TN) values for
// one k are contiguous and load as float4 / float2. lda, ldb, m0, n0 keep alignment.
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

// Copies rows [r0, r0+R) of one head's slice (HS floats per row, rows `stride` floats
// apart, T rows in all) into shared memory, zero-filling rows >= T:
//   transposed: dst[d*ld + r]   natural: dst[r*ld + d]
template <int R, int HS, bool TRANSPOSED>
__device__ __forceinline__ void load_rows(float* dst, int ld, const float* src, size_t stride, int r0, int T) {
    for (int idx = threadIdx.x; idx < R * HS; idx += blockDim.x) {
        int r = idx / HS, d = idx % HS;
        float x = (r0 + r < T) ? src[(size_t)(r0 + r) * stride + d] : 0.0f;
        if (TRANSPOSED) dst[d * ld + r] = x;
        else dst[r * ld + d] = x;
    }
}

// max / sum over the 16 lanes that share a row group (lanes differ in bits 0..3)
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

constexpr int ATT_THREADS = 256;  // 16 x 16 threads: tx = tid % 16, ty = tid / 16
constexpr int FWD_BQ = 64, FWD_BK = 64;

template <int HS>
constexpr size_t attention_forward_smem_floats() {
    return (size_t)HS * (FWD_BQ + 4) + (size_t)HS * (FWD_BK + 4) + (size_t)FWD_BK * HS + (size_t)FWD_BK * (FWD_BQ + 4);
}

// grid (ceil(T/64), B*NH), 256 threads, dynamic shared attention_forward_smem_floats<HS>()
template <int HS>
__global__ void __launch_bounds__(ATT_THREADS) attention_forward_fused_kernel(float* out, float* lse, const float* qkv,
                                                                               int T, int NH) {
    constexpr int LDQ = FWD_BQ + 4, LDK = FWD_BK + 4;  // padded rows keep float4 alignment
    constexpr int DT = HS / 16;                        // output dims per thread
    extern __shared__ float4 smem4[];
    float* smem = reinterpret_cast<float*>(smem4);
    float* Qt = smem;                 // (HS, LDQ)   Qt[d][r] = q[r0+r][d]
    float* Kt = Qt + HS * LDQ;        // (HS, LDK)   Kt[d][c] = k[c0+c][d]
    float* Vs = Kt + HS * LDK;        // (BK, HS)    Vs[c][d] = v[c0+c][d]
    float* Pt = Vs + FWD_BK * HS;     // (BK, LDQ)   Pt[c][r] = p[r][c]

    const int C = NH * HS;
    const int num_qt = (T + FWD_BQ - 1) / FWD_BQ;
    const int qt = num_qt - 1 - blockIdx.x;  // the longest rows first
    const int b = blockIdx.y / NH, h = blockIdx.y % NH;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t stride = 3 * (size_t)C;
    const float* qbase = qkv + (size_t)b * T * stride + h * HS;
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

    const int last_kt = (r0 + FWD_BQ - 1) / FWD_BK;  // the tile holding the block's last row
    for (int kt = 0; kt <= last_kt; kt++) {
        const int c0 = kt * FWD_BK;
        __syncthreads();  // the previous tile's Kt, Vs and Pt are no longer read
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
                const int c = c0 + tx * 4 + j;
                s[i][j] *= scale;
                if (c <= r) rowmax = fmaxf(rowmax, s[i][j]);
            }
            rowmax = group16_max(rowmax);
            const float m_new = fmaxf(m[i], rowmax);
            const float alpha = expf(m[i] - m_new);
            float rowsum = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int c = c0 + tx * 4 + j;
                const float p = (c <= r) ? expf(s[i][j] - m_new) : 0.0f;
                s[i][j] = p;
                rowsum += p;
            }
            rowsum = group16_sum(rowsum);
            l[i] = l[i] * alpha + rowsum;
            m[i] = m_new;
#pragma unroll
            for (int d = 0; d < DT; d++) o[i][d] *= alpha;
        }
        // P transposed into shared: column c of the tile holds this thread's 4 rows
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
        float* dst = out + ((size_t)b * T + r) * C + h * HS + tx * DT;
#pragma unroll
        for (int d = 0; d < DT; d++) dst[d] = o[i][d] * inv;
        if (tx == 0) lse[(size_t)blockIdx.y * T + r] = m[i] + logf(l[i]);
    }
}

// Whether version 2 supports this head size on this device (shared memory).
static bool attention_fused_supported(int HS, size_t smem_optin) {
    size_t need = 0;
    switch (HS) {
        case 16: need = attention_forward_smem_floats<16>(); break;
        case 32: need = attention_forward_smem_floats<32>(); break;
        case 64: need = attention_forward_smem_floats<64>(); break;
        case 128: need = attention_forward_smem_floats<128>(); break;
        default: return false;
    }
    return need * sizeof(float) <= smem_optin;
}

template <int HS>
static void attention_forward2_hs(float* out, float* lse, const float* qkv, int B, int T, int NH) {
    size_t smem = attention_forward_smem_floats<HS>() * sizeof(float);
    cudaCheck(cudaFuncSetAttribute(attention_forward_fused_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid(ceil_div(T, FWD_BQ), B * NH);
    attention_forward_fused_kernel<HS><<<grid, ATT_THREADS, smem>>>(out, lse, qkv, T, NH);
    launchCheck();
}

static void attention_forward2(float* out, float* lse, const float* qkv, int B, int T, int NH, int HS) {
    switch (HS) {
        case 16: attention_forward2_hs<16>(out, lse, qkv, B, T, NH); break;
        case 32: attention_forward2_hs<32>(out, lse, qkv, B, T, NH); break;
        case 64: attention_forward2_hs<64>(out, lse, qkv, B, T, NH); break;
        case 128: attention_forward2_hs<128>(out, lse, qkv, B, T, NH); break;
        default: fprintf(stderr, "error: fused attention supports HS in {16,32,64,128}, got %d\n", HS); exit(EXIT_FAILURE);
    }
}


// ----------------------------------------------------------------------------
// version 3: fused, TF32 tensor cores (WMMA)

using namespace nvcuda;
constexpr int TC_THREADS = 128;  // 4 warps x 16 query rows
constexpr int TC_PAD = 4;        // row padding (floats): keeps WMMA's 32-byte alignment

// one shared-memory region: 64 rows of max(HS, 64) + padding floats
template <int HS>
__host__ __device__ constexpr int tc_region_floats() { return 64 * ((HS > 64 ? HS : 64) + TC_PAD); }
template <int HS>
constexpr size_t attention_forward_tc_smem_floats() { return 3 * (size_t)tc_region_floats<HS>(); }

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

static bool attention_tc_supported(int HS, size_t smem_optin, int cc_major) {
    if (cc_major < 8) return false;
    size_t need = 0;
    switch (HS) {
        case 16: need = attention_forward_tc_smem_floats<16>(); break;
        case 32: need = attention_forward_tc_smem_floats<32>(); break;
        case 64: need = attention_forward_tc_smem_floats<64>(); break;
        default: return false;
    }
    return need * sizeof(float) <= smem_optin;
}

template <int HS>
static void attention_forward3_hs(float* out, float* lse, const float* qkv, int B, int T, int NH) {
    size_t smem = attention_forward_tc_smem_floats<HS>() * sizeof(float);
    cudaCheck(cudaFuncSetAttribute(attention_forward_tc_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid(ceil_div(T, 64), B * NH);
    attention_forward_tc_kernel<HS><<<grid, TC_THREADS, smem>>>(out, lse, qkv, T, NH);
    launchCheck();
}

static void attention_forward3(float* out, float* lse, const float* qkv, int B, int T, int NH, int HS) {
    switch (HS) {
        case 16: attention_forward3_hs<16>(out, lse, qkv, B, T, NH); break;
        case 32: attention_forward3_hs<32>(out, lse, qkv, B, T, NH); break;
        case 64: attention_forward3_hs<64>(out, lse, qkv, B, T, NH); break;
        default: fprintf(stderr, "error: tensor-core attention supports HS in {16,32,64}, got %d\n", HS); exit(EXIT_FAILURE);
    }
}

// ----------------------------------------------------------------------------

struct Scratch {
    float *q, *k, *v, *y, *att;
};
static Scratch scratch_alloc(int B, int T, int NH, int HS) {
    size_t n = (size_t)B * NH * T * HS;
    Scratch s;
    s.q = device_alloc<float>(n); s.k = device_alloc<float>(n); s.v = device_alloc<float>(n); s.y = device_alloc<float>(n);
    s.att = device_alloc<float>((size_t)B * NH * T * T);
    return s;
}
static void scratch_free(Scratch* s) {
    cudaCheck(cudaFree(s->q)); cudaCheck(cudaFree(s->k)); cudaCheck(cudaFree(s->v)); cudaCheck(cudaFree(s->y));
    cudaCheck(cudaFree(s->att));
}

static void run_version(int version, cublasHandle_t handle, float* out, float* lse, const float* qkv, Scratch* s,
                        int B, int T, int NH, int HS, int block_size) {
    if (version == 1) attention_forward1(handle, out, lse, s->q, s->k, s->v, s->y, s->att, qkv, B, T, NH, HS, block_size);
    else if (version == 2) attention_forward2(out, lse, qkv, B, T, NH, HS);
    else attention_forward3(out, lse, qkv, B, T, NH, HS);
}

static void check_shape(int version, cublasHandle_t handle, const cudaDeviceProp& prop, int B, int T, int NH, int HS) {
    size_t smem_optin = prop.sharedMemPerBlockOptin;
    if ((version == 2 && !attention_fused_supported(HS, smem_optin)) ||
        (version == 3 && !attention_tc_supported(HS, smem_optin, prop.major))) {
        printf("version %d, HS=%d: not supported on this device (head size, shared memory or sm_80), skipped\n", version, HS);
        return;
    }
    int C = NH * HS;
    float* qkv = make_random_float((size_t)B * T * 3 * C, -2.0f, 2.0f);  // peaked softmax rows
    float* ref = (float*)malloc((size_t)B * T * C * sizeof(float));
    float* ref_lse = (float*)malloc((size_t)B * NH * T * sizeof(float));
    attention_forward_cpu(ref, ref_lse, qkv, B, T, NH, HS);
    float* d_qkv = to_device(qkv, (size_t)B * T * 3 * C);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    float* d_lse = device_alloc<float>((size_t)B * NH * T);
    Scratch s = scratch_alloc(B, T, NH, HS);
    printf("version %d, B=%d T=%d NH=%d HS=%d\n", version, B, T, NH, HS);
    // versions 2 and 3 have fixed blocks (256, 128 threads); the block size varies version 1's kernels
    for (int block_size : {32, 128, 256, 1024}) {
        poison(d_out, (size_t)B * T * C);
        poison(d_lse, (size_t)B * NH * T);
        run_version(version, handle, d_out, d_lse, d_qkv, &s, B, T, NH, HS, block_size);
        if (version == 3) {
            // TF32 keeps 10 mantissa bits: each product is off by up to ~2^-11 relative, scores
            // of size ~2 by ~2e-3, so probabilities and outputs by a few 1e-3
            validate_result(d_out, ref, "out", (size_t)B * T * C, 5e-3f, 5e-3f);
            validate_result(d_lse, ref_lse, "lse", (size_t)B * NH * T, 5e-3f, 1e-3f);
        } else {
            // fp32 dot products of HS terms and sums of up to T terms vs a double reference
            validate_result(d_out, ref, "out", (size_t)B * T * C, 1e-5f, 1e-4f);
            validate_result(d_lse, ref_lse, "lse", (size_t)B * NH * T, 1e-5f, 1e-5f);
        }
        if (version >= 2) break;
    }
    scratch_free(&s);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse));
    free(qkv); free(ref); free(ref_lse);
}

int main(int argc, char** argv) {
    const int num_versions = 3;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    cublasHandle_t handle;
    cublasCheck(cublasCreate(&handle));
    cublasCheck(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH));  // fp32 exact for the check
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, handle, prop, 2, 64, 2, 64);
        check_shape(v, handle, prop, 1, 200, 3, 32);  // T not a multiple of 64
        check_shape(v, handle, prop, 2, 37, 2, 16);
        check_shape(v, handle, prop, 1, 70, 1, 128);
        check_shape(v, handle, prop, 3, 5, 4, 32);    // T smaller than a tile
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    // GPT-2 124M, one layer: B=8 T=1024 NH=12 HS=64, with TF32 on for version 1
    cublasCheck(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH));
    int B = 8, T = 1024, NH = 12, HS = 64, C = NH * HS;
    float* d_qkv = device_random((size_t)B * T * 3 * C, -2.0f, 2.0f);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    float* d_lse = device_alloc<float>((size_t)B * NH * T);
    Scratch s = scratch_alloc(B, T, NH, HS);
    double flops_full = 4.0 * B * NH * (double)T * T * HS;
    double flops_causal = flops_full / 2;
    printf("benchmark B=%d T=%d NH=%d HS=%d: %.1f GFLOP causal (%.1f computed in full)\n", B, T, NH, HS,
           flops_causal / 1e9, flops_full / 1e9);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        if (v == 2 && !attention_fused_supported(HS, prop.sharedMemPerBlockOptin)) continue;
        if (v == 3 && !attention_tc_supported(HS, prop.sharedMemPerBlockOptin, prop.major)) continue;
        for (int block_size : {128, 256, 512}) {
            float ms = benchmark_kernel(20, [&]() { run_version(v, handle, d_out, d_lse, d_qkv, &s, B, T, NH, HS, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "attention_forward v%d", v);
            report_time(what, v == 1 ? block_size : v == 2 ? ATT_THREADS : TC_THREADS, ms, 0, flops_causal);
            if (v >= 2) break;
        }
    }
    scratch_free(&s);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse));
    cublasCheck(cublasDestroy(handle));
    return 0;
}
