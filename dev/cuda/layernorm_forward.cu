// Workbench: LayerNorm forward over the last dimension, eps = 1e-5, biased variance:
//   mean[r] = sum_c x[r,c] / C,  rstd[r] = 1 / sqrt(sum_c (x[r,c] - mean)^2 / C + eps)
//   out[r,c] = (x[r,c] - mean[r]) * rstd[r] * weight[c] + bias[c]
//   out, inp (N,C) with N = B*T rows; mean, rstd (N) are saved for the backward pass.
// Version 2 ships: llmc/layernorm.cuh (included below, with LN_EPS), the trainer's layernorm_forward.
// Versions:
//   1: one thread per row (two passes over the row).
//   2: one warp per row; shuffles reduce the sums; the row is read three times
//      (mean, variance, output), the re-reads mostly hit L1/L2.
// Memory-bound: floor is reading inp and writing out, 2*N*C floats.
// Build: make cuda-workbenches; run: dev/cuda/bin/layernorm_forward [version] [--check-only]
#include "common.h"
#include "../../llmc/layernorm.cuh"

// ----------------------------------------------------------------------------
// CPU reference (double accumulation: the reference should be the more exact one)

static void layernorm_forward_cpu(float* out, float* mean, float* rstd, const float* inp,
                                  const float* weight, const float* bias, int N, int C) {
    for (int r = 0; r < N; r++) {
        const float* x = inp + (size_t)r * C;
        double m = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        double v = 0.0;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + LN_EPS);
        float* o = out + (size_t)r * C;
        for (int c = 0; c < C; c++) o[c] = (float)((x[c] - m) * s * weight[c] + bias[c]);
        mean[r] = (float)m;
        rstd[r] = (float)s;
    }
}

// ----------------------------------------------------------------------------
// kernels

// version 1: thread per row
__global__ void layernorm_forward_kernel1(float* out, float* mean, float* rstd, const float* inp,
                                          const float* weight, const float* bias, int N, int C) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= N) return;
    const float* x = inp + (size_t)r * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) { float d = x[c] - m; v += d * d; }
    v /= C;
    float s = 1.0f / sqrtf(v + LN_EPS);
    float* o = out + (size_t)r * C;
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = s;
}

// version 2: layernorm_forward_kernel2 of llmc/layernorm.cuh (the trainer's layernorm_forward, block 256)

static void layernorm_forward(int version, float* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C, int block_size) {
    if (version == 1) {
        layernorm_forward_kernel1<<<ceil_div(N, block_size), block_size>>>(out, mean, rstd, inp, weight, bias, N, C);
    } else {
        layernorm_forward_kernel2<<<ceil_div(N, block_size / 32), block_size>>>(out, mean, rstd, inp, weight, bias, N, C);
    }
    launchCheck();
}

// ----------------------------------------------------------------------------

static void check_shape(int version, int N, int C) {
    float* inp = make_random_float((size_t)N * C, -3.0f, 5.0f);  // nonzero mean on purpose
    float* w = make_random_float(C, 0.5f, 1.5f);
    float* b = make_random_float(C, -0.5f, 0.5f);
    float* ref = (float*)malloc((size_t)N * C * sizeof(float));
    float* ref_mean = (float*)malloc(N * sizeof(float));
    float* ref_rstd = (float*)malloc(N * sizeof(float));
    layernorm_forward_cpu(ref, ref_mean, ref_rstd, inp, w, b, N, C);
    float* d_inp = to_device(inp, (size_t)N * C);
    float* d_w = to_device(w, C);
    float* d_b = to_device(b, C);
    float* d_out = device_alloc<float>((size_t)N * C);
    float* d_mean = device_alloc<float>(N);
    float* d_rstd = device_alloc<float>(N);
    printf("version %d, N=%d C=%d\n", version, N, C);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        poison(d_out, (size_t)N * C); poison(d_mean, N); poison(d_rstd, N);
        layernorm_forward(version, d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, block_size);
        // float sums of C terms against a double reference: relative error ~ C * 2^-24
        validate_result(d_out, ref, "out", (size_t)N * C, 1e-5f, 1e-5f);
        validate_result(d_mean, ref_mean, "mean", N, 1e-5f, 1e-5f);
        validate_result(d_rstd, ref_rstd, "rstd", N, 0.0f, 1e-5f);
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b));
    cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd));
    free(inp); free(w); free(b); free(ref); free(ref_mean); free(ref_rstd);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 8 * 128, 768);
        check_shape(v, 37, 64);
        check_shape(v, 5, 33);     // C not a multiple of 32
        check_shape(v, 100, 1600);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    int N = 16 * 1024, C = 768;
    float* d_inp = device_random((size_t)N * C, -3.0f, 5.0f);
    float* d_w = device_random(C, 0.5f, 1.5f);
    float* d_b = device_random(C, -0.5f, 0.5f);
    float* d_out = device_alloc<float>((size_t)N * C);
    float* d_mean = device_alloc<float>(N);
    float* d_rstd = device_alloc<float>(N);
    double bytes = (2.0 * N * C + 2.0 * N) * sizeof(float);
    printf("benchmark N=%d C=%d (floor: %.1f MB moved)\n", N, C, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(50, [&]() {
                layernorm_forward(v, d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, block_size);
            });
            char what[64];
            snprintf(what, sizeof(what), "layernorm_forward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b));
    cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd));
    return 0;
}
