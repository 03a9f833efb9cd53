// llmc/layernorm.cuh: LayerNorm over the last dimension (eps 1e-5, biased variance), forward
// and backward.
// defines: LN_EPS, layernorm_forward_kernel2, layernorm_forward, layernorm_dinp_kernel2,
//          layernorm_params_partial_kernel, layernorm_params_final_kernel, layernorm_backward
//
// dev/cuda/layernorm_forward.cu version 2 (a warp per row; saves mean and rstd) and
// dev/cuda/layernorm_backward.cu version 2: dinp, dweight and dbias all ACCUMULATE (+=);
// dweight and dbias in two deterministic stages through a scratch buffer of
// 2 * ceil(N / ROWS_PER_CHUNK) * C floats (no atomics).
#ifndef LLMC_LAYERNORM_CUH
#define LLMC_LAYERNORM_CUH

#include "cuda_common.cuh"

#define LN_EPS 1e-5f

// warp per row
__global__ void layernorm_forward_kernel2(float* out, float* mean, float* rstd, const float* inp,
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
    layernorm_forward_kernel2<<<ceil_div(N, block / 32), block>>>(out, mean, rstd, inp, weight, bias, N, C);
    launchCheck();
}

// dinp += ..., warp per row
__global__ void layernorm_dinp_kernel2(float* dinp, const float* dout, const float* inp, const float* weight,
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

// dinp, dweight, dbias all accumulate (+=); dweight NULL (a frozen LayerNorm: LoRA) skips both
// parameter sums. scratch: 2 * ceil(N/256) * C floats.
static void layernorm_backward(float* dinp, float* dweight, float* dbias,  // (N, C), (C), (C)
                               float* scratch,
                               const float* dout, const float* inp,        // (N, C), (N, C)
                               const float* weight,                        // (C)
                               const float* mean, const float* rstd,       // (N), (N)
                               int N, int C) {
    const int block = 256;
    layernorm_dinp_kernel2<<<ceil_div(N, block / 32), block>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    launchCheck();
    if (dweight == NULL) return;
    int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
    dim3 pblock(32, block / 32), pgrid(ceil_div(C, 32), num_chunks);
    layernorm_params_partial_kernel<<<pgrid, pblock, 2 * block * sizeof(float)>>>(scratch, dout, inp, mean, rstd, N, C);
    launchCheck();
    layernorm_params_final_kernel<<<ceil_div(C, block), block>>>(dweight, dbias, scratch, num_chunks, C);
    launchCheck();
}

#endif  // LLMC_LAYERNORM_CUH
