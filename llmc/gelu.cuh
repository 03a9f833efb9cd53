// llmc/gelu.cuh: GELU (tanh approximation) fused with the bias of the matmul before it, and
// its backward pass.
// defines: GELU_SCALE, gelu, gelu_grad, bias_gelu_forward_kernel3, bias_gelu_forward,
//          gelu_backward_kernel2, gelu_backward
//
// bias_gelu_forward (dev/cuda/gelu_forward.cu version 3): pre += bias in place, out = gelu(pre).
// gelu_backward (dev/cuda/gelu_backward.cu version 2) WRITES dinp (=); dinp may alias dout.
// Both float4: N and OC multiples of 4, tensors 16-byte aligned. No fast math: gelu_grad uses
// 1 - tanh^2, which cannot overflow (llm.c's 1/cosh^2 under -Ofast gave NaN).
#ifndef LLMC_GELU_CUH
#define LLMC_GELU_CUH

#include "cuda_common.cuh"

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
__global__ void gelu_backward_kernel2(float4* dinp, const float4* inp, const float4* dout, size_t N4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = inp[i], d = dout[i];
    dinp[i] = make_float4(gelu_grad(x.x, d.x), gelu_grad(x.y, d.y), gelu_grad(x.z, d.z), gelu_grad(x.w, d.w));
}

// pre (N = rows * OC) gets the matmul's bias in place, out = gelu(pre)
// (dev/cuda/gelu_forward.cu v3: one read and two writes instead of a bias pass and a GELU pass)
__global__ void bias_gelu_forward_kernel3(float4* out, float4* pre, const float4* bias, size_t N4, int OC4) {
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
    bias_gelu_forward_kernel3<<<ceil_div(N / 4, block), block>>>((float4*)out, (float4*)pre, (const float4*)bias,
                                                                 N / 4, OC / 4);
    launchCheck();
}

static void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {  // (N) x3, dinp WRITTEN
    const int block = 256;
    gelu_backward_kernel2<<<ceil_div(N / 4, block), block>>>((float4*)dinp, (const float4*)inp, (const float4*)dout, N / 4);
    launchCheck();
}

#endif  // LLMC_GELU_CUH
