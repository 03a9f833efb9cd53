// llmc/residual.cuh: the residual add, with the bias of the projection before it fused in
// (the backward of a residual add needs no kernel: the gradients accumulate into dresidual).
// defines: residual_bias_forward_kernel3, residual_bias_forward_kernel4, residual_bias_forward,
//          residual_bias_dropout_forward_kernel, residual_bias_dropout_forward
//
// residual_bias_forward: out = inp1 + (inp2 + bias[i % C]), dev/cuda/residual_forward.cu
// version 3 (float4) where C % 4 == 0 and every pointer is 16-byte aligned, else version 4
// (scalar). residual_bias_dropout_forward: the same with dropout (llmc/regularizers.h) on
// inp2 + bias, before the add.
#ifndef LLMC_RESIDUAL_CUH
#define LLMC_RESIDUAL_CUH

#include "cuda_common.cuh"
#include "regularizers.h"

// out = inp1 + (inp2 + bias[i % C]): the bias of the matmul that made inp2, fused in.
// dev/cuda/residual_forward.cu version 3: thread per float4 (C % 4 == 0, 16-byte aligned)
__global__ void residual_bias_forward_kernel3(float4* out, const float4* a, const float4* b, const float4* bias,
                                              size_t N4, int C4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = a[i], y = b[i], z = bias[i % C4];
    out[i] = make_float4(x.x + (y.x + z.x), x.y + (y.y + z.y), x.z + (y.z + z.z), x.w + (y.w + z.w));
}
// version 4: the same with a thread per element, where float4 does not fit
__global__ void residual_bias_forward_kernel4(float* out, const float* a, const float* b, const float* bias, size_t N, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = a[i] + (b[i] + bias[i % C]);
}

static void residual_bias_forward(float* out, const float* inp1, const float* inp2, const float* bias,  // (N) x3, (C)
                                  size_t N, int C) {
    const int block = 256;
    if (C % 4 == 0 && ((uintptr_t)out | (uintptr_t)inp1 | (uintptr_t)inp2 | (uintptr_t)bias) % 16 == 0) {
        residual_bias_forward_kernel3<<<ceil_div(N / 4, block), block>>>((float4*)out, (const float4*)inp1,
                                                                         (const float4*)inp2, (const float4*)bias, N / 4, C / 4);
    } else {
        residual_bias_forward_kernel4<<<ceil_div(N, block), block>>>(out, inp1, inp2, bias, N, C);
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

#endif  // LLMC_RESIDUAL_CUH
