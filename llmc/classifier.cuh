// llmc/classifier.cuh: the fused classifier: softmax, cross-entropy loss, argmax and the
// gradient of the loss, written over the logits (dev/cuda/fused_classifier.cu version 2).
// defines: SoftmaxStat, stat_combine, stat_shfl_xor, block_stat_reduce, classifier_kernel2
//
// logits (N, Vp), columns V..Vp-1 padding (Vp % 4 == 0, rows 16-byte aligned); targets (N);
// dloss (N) = d(mean loss)/d(loss of row r) or NULL; losses[r] = lse - logit[target] for
// every row; argmax (N) or NULL; with write_dlogits the logits become
// (softmax - onehot) * dloss[r], 0 in the padding. One block per row, two passes over it.
#ifndef LLMC_CLASSIFIER_CUH
#define LLMC_CLASSIFIER_CUH

#include "cuda_common.cuh"

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
__global__ void classifier_kernel2(float* logits, float* losses, int* argmax, const int* targets,
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

#endif  // LLMC_CLASSIFIER_CUH
