// llmc/global_norm.cuh: the L2 norm of a float vector in double (the gradient norm for
// clipping, the parameter norm of the log), deterministic (dev/cuda/global_norm.cu version 2).
// defines: warp_sum_double, block_sum_double, block_sum_squares, norm_partial_kernel, norm_final_kernel,
//          NORM_MAX_BLOCKS, vector_norm
//
// A fixed grid, a function of n only, writes one double partial per block; one block adds
// the partials in block order: the same input gives the same bits on every run and GPU.
#ifndef LLMC_GLOBAL_NORM_CUH
#define LLMC_GLOBAL_NORM_CUH

#include "cuda_common.cuh"

// sum over the 32 lanes of a warp, in double; every lane gets the result
__device__ __forceinline__ double warp_sum_double(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
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

// The block's sum of x[i]^2 (double) over its grid-stride share of x: each thread adds its
// elements in order, then the fixed-shape block reduction (valid in thread 0).
__device__ double block_sum_squares(const float* x, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double xi = x[i];
        s += xi * xi;
    }
    return block_sum_double(s);
}

__global__ void norm_partial_kernel(double* partial, const float* x, size_t n) {
    double s = block_sum_squares(x, n);
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

#endif  // LLMC_GLOBAL_NORM_CUH
