// llmc/cuda_common.cuh: the CUDA helpers every kernel header, the CUDA trainer and the
// kernel workbenches (dev/cuda/common.h) share.
// defines: cudaCheck, launchCheck, cublasCheck, gpuMalloc, ceil_div, require_gpu, ROWS_PER_CHUNK,
//          warp_sum, warp_max
//
// Contract: every CUDA and cuBLAS call goes through cudaCheck / cublasCheck and every
// launch is followed by launchCheck(); a failure prints file:line and the call and exits 1.
// gpuMalloc is a checked cudaMalloc whose out-of-memory message says how much was asked
// for, what the GPU has, and what to change. CUDA only (nvcc, or g++ with dev/cuda/emu).
#ifndef LLMC_CUDA_COMMON_CUH
#define LLMC_CUDA_COMMON_CUH

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

// ----------------------------------------------------------------------------
// checked CUDA and cuBLAS calls

static void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        fflush(stdout);
        fprintf(stderr, "error: CUDA error at %s:%d: %s\n  (call: %s)\n", file, line, cudaGetErrorString(err), what);
        if (err == cudaErrorNoKernelImageForDevice) {
            fprintf(stderr, "  this binary has no code for this GPU: rebuild it for the GPU's compute capability XY, "
                    "e.g. rm -f train_gpt2fp32cu && make train_gpt2fp32cu GPU_ARCHS=sm_XY\n");
        }
        exit(1);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)
// a launch returns nothing; ask for the launch error right after it
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

// Exits 1 with a clear message when there is no usable GPU ("error: no CUDA GPU is available
// (why). <advice>"); selects device 0 and fills prop.
static void require_gpu(cudaDeviceProp* prop, const char* advice) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        fflush(stdout);
        fprintf(stderr, "error: no CUDA GPU is available (%s). %s\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "the device count is 0", advice);
        exit(1);
    }
    cudaCheck(cudaSetDevice(0));
    cudaCheck(cudaGetDeviceProperties(prop, 0));
}

#define ROWS_PER_CHUNK 256  // rows per partial sum in the two-stage column reductions

// ----------------------------------------------------------------------------
// device helpers

// sum / max over the 32 lanes of a warp; every lane gets the result
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
    return v;
}

#endif  // LLMC_CUDA_COMMON_CUH
