// llmc/regularizers.cuh: the CUDA kernels of llmc/regularizers.h's dropout and weight noise,
// which draw the same numbers as train_gpt2.c (dropout_factor, weight_noise_at).
// defines: dropout_kernel, dropout_apply, weight_noise_kernel
//
// (residual_bias_dropout_forward, the dropout of a projection before its residual add, is in
// llmc/residual.cuh; the dropout of the attention weights in llmc/attention.cuh, version 1.)
#ifndef LLMC_REGULARIZERS_CUH
#define LLMC_REGULARIZERS_CUH

#include "cuda_common.cuh"
#include "regularizers.h"

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

// params[j] += weight_noise_at(key, offset + j, sigma) for j < n: the noise of one tensor that
// starts at flat parameter index `offset` (llmc/regularizers.h; the same numbers as train_gpt2.c)
__global__ void weight_noise_kernel(float* params, size_t offset, size_t n, uint64_t key, float sigma) {
    size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) params[j] += weight_noise_at(key, offset + j, sigma);
}

#endif  // LLMC_REGULARIZERS_CUH
