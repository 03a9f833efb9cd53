// dev/cuda/common.h: shared helpers for the kernel workbenches in dev/cuda/.
//
// Contract: every CUDA and cuBLAS call goes through cudaCheck / cublasCheck,
// every launch is followed by launchCheck(); each prints file:line and exits 1
// (llmc/cuda_common.cuh, which the trainer uses too). Each workbench includes the
// shipped version of its kernel from llmc/<layer>.cuh and checks it beside the
// experimental versions, so what is checked and timed is the code that trains.
// validate_result() copies a device buffer back, compares it element by element
// with a CPU reference (|gpu - ref| <= atol + rtol * |ref|), prints the worst
// element, and exits 1 on a mismatch, a NaN or an element never written (the
// output buffers are poisoned with NaN before each kernel under test runs).
// benchmark_kernel() times a launch with CUDA events after a warm-up, flushing
// the L2 cache between repeats, and returns the median in milliseconds.
//
// Workbench layout (each dev/cuda/<kernel>.cu): a CPU reference, kernels
// numbered 1..N, a check of every version against the reference over several
// block sizes, then a benchmark that prints time and achieved GB/s or TFLOP/s.
// Usage of every workbench: ./bin/<kernel> [version] [--check-only]
#pragma once

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

// cudaCheck, launchCheck, cublasCheck, ceil_div, require_gpu, warp_sum, warp_max: shared with
// the trainer and the kernel headers
#include "../../llmc/cuda_common.cuh"

// ----------------------------------------------------------------------------
// no GPU: a clear error

// Exits 1 when no CUDA device is visible (llmc/cuda_common.cuh); prints the device's name.
static inline void require_gpu(void) {
    cudaDeviceProp prop;
    require_gpu(&prop, "The workbenches run on a GPU only (the CPU emulator builds: make cuda-emu).");
    printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
}

// ----------------------------------------------------------------------------
// command line: [version] [--check-only]

typedef struct {
    int version;     // 0 = all versions
    int check_only;  // 1 = skip the benchmark
} BenchArgs;

static inline BenchArgs parse_bench_args(int argc, char** argv, int num_versions) {
    BenchArgs a = {0, 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check-only") == 0) {
            a.check_only = 1;
        } else {
            char* end = NULL;
            long v = strtol(argv[i], &end, 10);
            if (*end != '\0' || v < 1 || v > num_versions) {
                fprintf(stderr, "error: argument '%s': expected a kernel version 1..%d or --check-only\n",
                        argv[i], num_versions);
                exit(EXIT_FAILURE);
            }
            a.version = (int)v;
        }
    }
    return a;
}

// ----------------------------------------------------------------------------
// deterministic random inputs (xorshift64*), so every run checks the same data

static uint64_t g_rng_state = 0x9E3779B97F4A7C15ull;
static inline uint32_t rand_u32(void) {
    g_rng_state ^= g_rng_state >> 12;
    g_rng_state ^= g_rng_state << 25;
    g_rng_state ^= g_rng_state >> 27;
    return (uint32_t)((g_rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}
static inline float rand_uniform(float lo, float hi) {
    return lo + (hi - lo) * ((rand_u32() >> 8) * (1.0f / 16777216.0f));
}
static inline float* make_random_float(size_t n, float lo, float hi) {
    float* a = (float*)malloc(n * sizeof(float));
    if (a == NULL) { fprintf(stderr, "error: host malloc of %zu floats failed\n", n); exit(EXIT_FAILURE); }
    for (size_t i = 0; i < n; i++) a[i] = rand_uniform(lo, hi);
    return a;
}
static inline int* make_random_int(size_t n, int bound) {
    int* a = (int*)malloc(n * sizeof(int));
    if (a == NULL) { fprintf(stderr, "error: host malloc of %zu ints failed\n", n); exit(EXIT_FAILURE); }
    for (size_t i = 0; i < n; i++) a[i] = (int)(rand_u32() % (uint32_t)bound);
    return a;
}

// device buffer holding a copy of host data
template <class T>
static inline T* to_device(const T* host, size_t n) {
    T* d = NULL;
    cudaCheck(cudaMalloc((void**)&d, n * sizeof(T)));
    cudaCheck(cudaMemcpy(d, host, n * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <class T>
static inline T* device_alloc(size_t n) {
    T* d = NULL;
    cudaCheck(cudaMalloc((void**)&d, n * sizeof(T)));
    return d;
}
// device buffer of n random floats in [lo, hi) (benchmarks never time zeros)
static inline float* device_random(size_t n, float lo, float hi) {
    float* h = make_random_float(n, lo, hi);
    float* d = to_device(h, n);
    free(h);
    return d;
}
// fills a float buffer with NaN, so an element a kernel never writes fails the check
static inline void poison(float* d, size_t n) { cudaCheck(cudaMemset(d, 0xFF, n * sizeof(float))); }

// ----------------------------------------------------------------------------
// checking

// Compares n floats on the device against a host reference. Exits 1 on mismatch.
static inline void validate_result(const float* d_out, const float* ref, const char* name, size_t n,
                                   float atol, float rtol) {
    std::vector<float> out(n);
    cudaCheck(cudaMemcpy(out.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost));
    size_t worst = 0, bad = 0, max_at = 0;
    double worst_excess = -INFINITY, max_diff = 0.0;  // excess = |diff| - allowed
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)out[i] - (double)ref[i]);
        double allowed = atol + rtol * fabs((double)ref[i]);
        double excess = (out[i] != out[i]) ? INFINITY : diff - allowed;  // NaN never passes
        if (excess > 0) bad++;
        if (excess > worst_excess) { worst_excess = excess; worst = i; }
        if (diff > max_diff) { max_diff = diff; max_at = i; }
    }
    if (bad > 0) {
        double worst_diff = fabs((double)out[worst] - (double)ref[worst]);
        fprintf(stderr, "MISMATCH %s: %zu of %zu elements off; worst at [%zu]: gpu %.9g, cpu %.9g, "
                "|diff| %.3g > atol %.1e + rtol %.1e * |cpu|\n", name, bad, n, worst,
                out[worst], ref[worst], worst_diff, atol, rtol);
        exit(EXIT_FAILURE);
    }
    printf("  ok %-10s n=%-10zu max |diff| %.3g at [%zu] (cpu %.6g; atol %.0e, rtol %.0e)\n", name, n,
           max_diff, max_at, ref[max_at], atol, rtol);
}

// ----------------------------------------------------------------------------
// timing

// Runs f() `repeats` times after 3 warm-ups, each timed with events after an L2
// flush (a memset over twice the L2 size); returns the median in milliseconds.
template <class F>
static inline float benchmark_kernel(int repeats, F f) {
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    size_t flush_bytes = (size_t)prop.l2CacheSize * 2;
    void* flush = NULL;
    cudaCheck(cudaMalloc(&flush, flush_bytes));
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) f();
    cudaCheck(cudaDeviceSynchronize());
    std::vector<float> times;
    for (int i = 0; i < repeats; i++) {
        cudaCheck(cudaMemset(flush, i & 0xFF, flush_bytes));
        cudaCheck(cudaEventRecord(start));
        f();
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        float ms = 0.0f;
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    cudaCheck(cudaFree(flush));
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

// Prints one benchmark line: time, then bandwidth (bytes moved at least once) and FLOP rate.
static inline void report_time(const char* what, int block_size, float ms, double bytes, double flops) {
    printf("  %-26s block %4d: %9.4f ms", what, block_size, ms);
    if (bytes > 0) printf("  %8.1f GB/s", bytes / (ms * 1e-3) / 1e9);
    if (flops > 0) printf("  %8.2f TFLOP/s", flops / (ms * 1e-3) / 1e12);
    printf("\n");
}
