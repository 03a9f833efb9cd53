// Workbench: GELU backward (tanh approximation). WRITES dinp (=, not +=): in the
// trainer the GELU input has one consumer, so its gradient has one producer.
//   u = sqrt(2/pi) * (x + 0.044715 x^3),  gelu(x) = 0.5 x (1 + tanh u)
//   dinp[i] = dout[i] * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2))
//   dinp, inp, dout (N)
// Versions:
//   1: one thread per element.
//   2: one thread per 4 elements, float4 loads and stores (N % 4 == 0). Shipped:
//      llmc/gelu.cuh (with gelu_grad, which version 1 uses too).
// Memory-bound: floor is reading inp and dout and writing dinp, 3*N floats.
// No fast math: llm.c's -Ofast build turned this function into NaN for large |x|
// (its 1/cosh^2 form overflows); this form uses 1 - tanh^2, which cannot.
// Build: make cuda-workbenches; run: dev/cuda/bin/gelu_backward [version] [--check-only]
#include "common.h"
#include "../../llmc/gelu.cuh"

static void gelu_backward_cpu(float* dinp, const float* inp, const float* dout, size_t N) {
    const double s = 0.7978845608028654;
    for (size_t i = 0; i < N; i++) {
        double x = inp[i];
        double th = tanh(s * (x + 0.044715 * x * x * x));
        double local = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
        dinp[i] = (float)(local * dout[i]);
    }
}

// version 1: thread per element
__global__ void gelu_backward_kernel1(float* dinp, const float* inp, const float* dout, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) dinp[i] = gelu_grad(inp[i], dout[i]);
}

// version 2: gelu_backward_kernel2 of llmc/gelu.cuh (the trainer's gelu_backward)

static void gelu_backward(int version, float* dinp, const float* inp, const float* dout, size_t N, int block_size) {
    if (version == 1) {
        gelu_backward_kernel1<<<ceil_div(N, block_size), block_size>>>(dinp, inp, dout, N);
    } else {
        gelu_backward_kernel2<<<ceil_div(N / 4, block_size), block_size>>>(
            (float4*)dinp, (const float4*)inp, (const float4*)dout, N / 4);
    }
    launchCheck();
}

static void check_shape(int version, size_t N) {
    if (version == 2 && N % 4 != 0) return;
    float* inp = make_random_float(N, -6.0f, 6.0f);
    if (N > 3) { inp[0] = 0.0f; inp[1] = 40.0f; inp[2] = -40.0f; inp[3] = 1e4f; }  // saturated tanh: no NaN
    float* dout = make_random_float(N, -1.0f, 1.0f);
    float* ref = (float*)malloc(N * sizeof(float));
    gelu_backward_cpu(ref, inp, dout, N);
    float* d_inp = to_device(inp, N);
    float* d_dout = to_device(dout, N);
    float* d_dinp = device_alloc<float>(N);
    printf("version %d, N=%zu\n", version, N);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        poison(d_dinp, N);
        gelu_backward(version, d_dinp, d_inp, d_dout, N, block_size);
        // 1 - tanh^2 cancels near saturation: absolute error ~ 1e-6 there
        validate_result(d_dinp, ref, "dinp", N, 2e-6f, 1e-5f);
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_dinp));
    free(inp); free(dout); free(ref);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, (size_t)8 * 64 * 3072);
        check_shape(v, 1001);
        check_shape(v, 4 * 37);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    size_t N = (size_t)16 * 1024 * 4 * 768;
    float* d_inp = device_random(N, -6.0f, 6.0f);
    float* d_dout = device_random(N, -1.0f, 1.0f);
    float* d_dinp = device_alloc<float>(N);
    double bytes = 3.0 * N * sizeof(float);
    printf("benchmark N=%zu (B=16 T=1024 4C=3072; floor: %.1f MB moved)\n", N, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(50, [&]() { gelu_backward(v, d_dinp, d_inp, d_dout, N, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "gelu_backward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_dinp));
    return 0;
}
