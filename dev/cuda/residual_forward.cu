// Workbench: residual forward, out[i] = inp1[i] + inp2[i],   out, inp1, inp2 (N)
// (the backward of a residual add is a copy of dout into both branches, which the
// trainer does by accumulating into the residual stream's gradient: no kernel).
// Versions:
//   1: one thread per element.
//   2: one thread per 4 elements, float4 loads and stores (N % 4 == 0).
//   3: with the bias of the matmul that produced inp2 fused in: out = inp1 + inp2 + bias[i % C],
//      float4 (C % 4 == 0); saves the matmul's separate bias pass (a read and a write of inp2).
//   4: version 3 with a thread per element: the trainer's fallback where float4 does not fit.
// Versions 3 and 4 ship: llmc/residual.cuh's residual_bias_forward (3 where C % 4 == 0 and
// every pointer is 16-byte aligned, else 4).
// Memory-bound: floor is 3*N floats (two reads, one write).
// Build: make cuda-workbenches; run: dev/cuda/bin/residual_forward [version] [--check-only]
#include "common.h"
#include "../../llmc/residual.cuh"

static void residual_forward_cpu(float* out, const float* a, const float* b, size_t N) {
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// version 1: thread per element
__global__ void residual_forward_kernel1(float* out, const float* a, const float* b, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = a[i] + b[i];
}

// version 2: thread per float4
__global__ void residual_forward_kernel2(float4* out, const float4* a, const float4* b, size_t N4) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N4) return;
    float4 x = a[i], y = b[i];
    out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
}

// versions 3 and 4: residual_bias_forward_kernel3 and residual_bias_forward_kernel4 of
// llmc/residual.cuh (the trainer's residual_bias_forward)

static void residual_forward(int version, float* out, const float* a, const float* b, const float* bias, int C,
                             size_t N, int block_size) {
    if (version == 1) {
        residual_forward_kernel1<<<ceil_div(N, block_size), block_size>>>(out, a, b, N);
    } else if (version == 2) {
        residual_forward_kernel2<<<ceil_div(N / 4, block_size), block_size>>>(
            (float4*)out, (const float4*)a, (const float4*)b, N / 4);
    } else if (version == 4) {
        residual_bias_forward_kernel4<<<ceil_div(N, block_size), block_size>>>(out, a, b, bias, N, C);
    } else {
        residual_bias_forward_kernel3<<<ceil_div(N / 4, block_size), block_size>>>(
            (float4*)out, (const float4*)a, (const float4*)b, (const float4*)bias, N / 4, C / 4);
    }
    launchCheck();
}

static void check_shape(int version, size_t N, int C) {
    if ((version == 2 || version == 3) && N % 4 != 0) return;
    if (version == 3 && (C % 4 != 0 || N % C != 0)) return;
    if (version == 4 && N % C != 0) return;
    float* a = make_random_float(N, -1.0f, 1.0f);
    float* b = make_random_float(N, -1.0f, 1.0f);
    float* bias = make_random_float(C, -1.0f, 1.0f);
    float* ref = (float*)malloc(N * sizeof(float));
    // versions 3, 4: the trainer's order, a + (b + bias): the matmul output gets its bias first
    float* b2 = (float*)malloc(N * sizeof(float));
    for (size_t i = 0; i < N; i++) b2[i] = version >= 3 ? b[i] + bias[i % C] : b[i];
    residual_forward_cpu(ref, a, b2, N);
    float* d_a = to_device(a, N);
    float* d_b = to_device(b, N);
    float* d_bias = to_device(bias, C);
    float* d_out = device_alloc<float>(N);
    printf("version %d, N=%zu C=%d\n", version, N, C);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        poison(d_out, N);
        residual_forward(version, d_out, d_a, d_b, d_bias, C, N, block_size);
        validate_result(d_out, ref, "out", N, 0.0f, 0.0f);  // the same float adds in the same order: exact
    }
    cudaCheck(cudaFree(d_a)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_bias));
    free(a); free(b); free(ref); free(bias); free(b2);
}

int main(int argc, char** argv) {
    const int num_versions = 4;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, (size_t)8 * 1024 * 768, 768);
        check_shape(v, 1001, 7);
        check_shape(v, 4 * 37, 4);
        check_shape(v, 5 * 36, 36);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    size_t N = (size_t)16 * 1024 * 768;
    float* d_a = device_random(N, -1.0f, 1.0f);
    float* d_b = device_random(N, -1.0f, 1.0f);
    float* d_out = device_alloc<float>(N);
    float* d_bias = device_random(768, -1.0f, 1.0f);
    double bytes = 3.0 * N * sizeof(float);
    printf("benchmark N=%zu (B=16 T=1024 C=768; floor: %.1f MB moved)\n", N, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(50, [&]() { residual_forward(v, d_out, d_a, d_b, d_bias, 768, N, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "residual_forward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_a)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_bias));
    return 0;
}
