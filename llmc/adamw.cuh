// llmc/adamw.cuh: the AdamW update of one tensor, the arithmetic of train_gpt2.c's
// gpt2_adamw_update (dev/cuda/adamw.cu version 1: a thread per parameter; tensors start at
// any float offset, so no float4).
// defines: adamw_kernel1
//
// g = grads * grad_scale; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// p = (init ? p - lr_wd (p - init) : p * decay) - step_size m / (sqrt(v) / b2s + eps), with
// decay = 1 - lr wd, lr_wd = lr wd, step_size = lr / (1 - beta1^t), b2s = sqrt(1 - beta2^t)
// computed by the host in double. init != NULL: weight decay toward the initial values
// (--decay-toward-init). params, m, v updated in place; grads and init only read.
#ifndef LLMC_ADAMW_CUH
#define LLMC_ADAMW_CUH

#include "cuda_common.cuh"

// init != NULL: weight decay toward the initial values, p - lr_wd (p - init), instead of p * decay
__global__ void adamw_kernel1(float* params, float* m, float* v, const float* grads, const float* init, size_t n,
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

#endif  // LLMC_ADAMW_CUH
