// Workbench: global L2 norm of a float vector (the gradient norm used for clipping,
// and the parameter norm of the log): sqrt(sum_i x_i^2), accumulated in double like
// train_gpt2.c's vector_norm.
// Version 2 ships: llmc/global_norm.cuh (included below), the trainer's vector_norm.
// Versions:
//   1: grid-stride per-thread sums, block reduction, one double atomicAdd per block.
//      The order of the atomics varies run to run: not bit-reproducible.
//   2: deterministic: a fixed grid (a function of n only) writes one double partial
//      per block, a single-block kernel adds the partials in block order. The same
//      input gives the same bits on every run and every GPU.
// Memory-bound: floor is reading x once, 4*n bytes.
// Build: make cuda-workbenches; run: dev/cuda/bin/global_norm [version] [--check-only]
#include "common.h"
#include "../../llmc/global_norm.cuh"

static double norm_cpu(const float* x, size_t n) {
    long double s = 0.0L;
    for (size_t i = 0; i < n; i++) s += (long double)x[i] * x[i];
    return sqrt((double)s);
}

// warp_sum_double, block_sum_double (the block-wide sum in double, valid in thread 0) and
// block_sum_squares: llmc/global_norm.cuh

// version 1
// each block's sum (block_sum_squares, llmc/global_norm.cuh) added with atomicAdd: the order
// of the blocks' additions, and so the last bits, can change from run to run
__global__ void norm_kernel1(double* out, const float* x, size_t n) {
    double s = block_sum_squares(x, n);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

// version 2 (llmc/global_norm.cuh, the trainer's vector_norm with block 512): norm_partial_kernel
// writes partial[blockIdx.x], the block's grid-stride sum; norm_final_kernel, one block, adds the
// partials (each thread a strided slice in order, then the fixed-shape block reduction).
// blocks for version 2: a function of n only, so the summation order never changes
static int norm_num_blocks(size_t n, int block_size) {
    size_t want = (n + (size_t)block_size * 8 - 1) / ((size_t)block_size * 8);  // >= 8 elements per thread
    return (int)std::max<size_t>(1, std::min<size_t>(want, NORM_MAX_BLOCKS));
}

// scratch: NORM_MAX_BLOCKS + 1 doubles. Returns the norm (synchronizes).
static double global_norm(int version, const float* x, size_t n, double* scratch, int block_size) {
    double sumsq = 0.0;
    if (version == 1) {
        cudaCheck(cudaMemset(scratch, 0, sizeof(double)));
        int blocks = norm_num_blocks(n, block_size);
        norm_kernel1<<<blocks, block_size>>>(scratch, x, n);
        launchCheck();
        cudaCheck(cudaMemcpy(&sumsq, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    } else {
        int blocks = norm_num_blocks(n, block_size);
        norm_partial_kernel<<<blocks, block_size>>>(scratch + 1, x, n);
        launchCheck();
        norm_final_kernel<<<1, 1024>>>(scratch, scratch + 1, blocks);
        launchCheck();
        cudaCheck(cudaMemcpy(&sumsq, scratch, sizeof(double), cudaMemcpyDeviceToHost));
    }
    return sqrt(sumsq);
}

static void check_shape(int version, size_t n) {
    float* x = make_random_float(n, -1.0f, 1.0f);
    double ref = norm_cpu(x, n);
    float* d_x = to_device(x, n);
    double* d_s = device_alloc<double>(NORM_MAX_BLOCKS + 1);
    printf("version %d, n=%zu\n", version, n);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        double got = global_norm(version, d_x, n, d_s, block_size);
        double again = global_norm(version, d_x, n, d_s, block_size);
        double rel = fabs(got - ref) / ref;
        // double sums of n terms: relative error ~ n * 2^-53
        if (!(rel < 1e-12)) {
            fprintf(stderr, "MISMATCH norm: gpu %.17g, cpu %.17g, relative error %.3g > 1e-12 (block %d)\n",
                    got, ref, rel, block_size);
            exit(EXIT_FAILURE);
        }
        if (version == 2 && got != again) {
            fprintf(stderr, "MISMATCH norm: two runs differ (%.17g vs %.17g): version 2 must be deterministic\n", got, again);
            exit(EXIT_FAILURE);
        }
        printf("  ok norm block %4d: %.12g (relative error %.2g)\n", block_size, got, rel);
    }
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_s));
    free(x);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, (size_t)3 << 20);
        check_shape(v, 1001);
        check_shape(v, 1);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    size_t n = 124475904;
    float* d_x = device_random(n, -1.0f, 1.0f);
    double* d_s = device_alloc<double>(NORM_MAX_BLOCKS + 1);
    double bytes = 4.0 * n;
    printf("benchmark n=%zu (GPT-2 124M; floor: %.1f MB moved; includes the copy of the result)\n", n, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {256, 512, 1024}) {
            float ms = benchmark_kernel(20, [&]() { global_norm(v, d_x, n, d_s, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "global_norm v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_s));
    return 0;
}
