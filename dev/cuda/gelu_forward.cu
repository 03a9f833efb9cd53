// Workbench: GELU forward, tanh approximation (GPT-2's):
//   out[i] = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))),   out, inp (N)
// Versions:
//   1: one thread per element.
//   2: one thread per 4 elements, float4 loads and stores (N % 4 == 0).
//   3: the matmul's bias fused in: pre[i] += bias[i % OC] in place, then out = gelu(pre),
//      float4 (OC % 4 == 0). Replaces a bias pass (read + write) and a GELU pass (read +
//      write) by one read and two writes; the trainer's MLP uses it after the fc matmul.
//      Shipped: llmc/gelu.cuh (with gelu(), which versions 1 and 2 use too).
// Memory-bound: floor is reading inp and writing out, 2*N floats (version 3: 3*N).
// No fast math here: tanhf is exact to a few ulps; --use_fast_math would swap in
// approximations that differ from the CPU trainer.
// Build: make cuda-workbenches; run: dev/cuda/bin/gelu_forward [version] [--check-only]
#include "common.h"
#include "../../llmc/gelu.cuh"

static void gelu_forward_cpu(float* out, const float* inp, size_t N) {
    for (size_t i = 0; i < N; i++) {
        double x = inp[i];
        out[i] = (float)(0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
    }
}

// version 1: thread per element
__global__ void gelu_forward_kernel1(float* out, const float* inp, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = gelu(inp[i]);
}

// version 2: thread per float4
__global__ void gelu_forward_kernel2(float4* out, const float4* inp, size_t N4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = inp[i];
    out[i] = make_float4(gelu(x.x), gelu(x.y), gelu(x.z), gelu(x.w));
}

// version 3: bias_gelu_forward_kernel3 of llmc/gelu.cuh (the trainer's bias_gelu_forward)

static void gelu_forward(int version, float* out, float* inp, const float* bias, int OC, size_t N, int block_size) {
    if (version == 1) {
        gelu_forward_kernel1<<<ceil_div(N, block_size), block_size>>>(out, inp, N);
    } else if (version == 2) {
        gelu_forward_kernel2<<<ceil_div(N / 4, block_size), block_size>>>((float4*)out, (const float4*)inp, N / 4);
    } else {
        bias_gelu_forward_kernel3<<<ceil_div(N / 4, block_size), block_size>>>((float4*)out, (float4*)inp,
                                                                                (const float4*)bias, N / 4, OC / 4);
    }
    launchCheck();
}

static void check_shape(int version, size_t N, int OC) {
    if (version >= 2 && N % 4 != 0) return;
    if (version == 3 && (OC % 4 != 0 || N % OC != 0)) return;
    float* inp = make_random_float(N, -6.0f, 6.0f);
    inp[0] = 0.0f; if (N > 2) { inp[1] = 40.0f; inp[2] = -40.0f; }  // tanh saturates: no NaN
    float* bias = make_random_float(OC, -1.0f, 1.0f);
    float* pre = (float*)malloc(N * sizeof(float));  // version 3: inp + bias
    for (size_t i = 0; i < N; i++) pre[i] = version == 3 ? inp[i] + bias[i % OC] : inp[i];
    float* ref = (float*)malloc(N * sizeof(float));
    gelu_forward_cpu(ref, pre, N);
    float* d_inp = device_alloc<float>(N);
    float* d_bias = to_device(bias, OC);
    float* d_out = device_alloc<float>(N);
    printf("version %d, N=%zu OC=%d\n", version, N, OC);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        cudaCheck(cudaMemcpy(d_inp, inp, N * sizeof(float), cudaMemcpyHostToDevice));
        poison(d_out, N);
        gelu_forward(version, d_out, d_inp, d_bias, OC, N, block_size);
        // tanhf is within 2 ulp; the products add a few more
        validate_result(d_out, ref, "out", N, 1e-6f, 1e-6f);
        if (version == 3) validate_result(d_inp, pre, "inp+bias", N, 0.0f, 0.0f);  // one float add: exact
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_bias));
    free(inp); free(ref); free(bias); free(pre);
}

int main(int argc, char** argv) {
    const int num_versions = 3;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, (size_t)8 * 64 * 3072, 3072);
        check_shape(v, 1001, 7);
        check_shape(v, 4 * 37, 4);
        check_shape(v, 12 * 36, 36);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    size_t N = (size_t)16 * 1024 * 4 * 768;
    float* d_inp = device_random(N, -6.0f, 6.0f);
    float* d_out = device_alloc<float>(N);
    float* d_bias = device_random(3072, -1.0f, 1.0f);
    double bytes = 2.0 * N * sizeof(float);
    printf("benchmark N=%zu (B=16 T=1024 4C=3072; floor: %.1f MB moved)\n", N, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            // version 3 adds the bias in place each repeat: the values drift, the traffic does not
            float ms = benchmark_kernel(50, [&]() { gelu_forward(v, d_out, d_inp, d_bias, 3072, N, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "gelu_forward v%d", v);
            report_time(what, block_size, ms, v == 3 ? 1.5 * bytes : bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_bias));
    return 0;
}
