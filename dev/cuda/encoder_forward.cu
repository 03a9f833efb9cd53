// Workbench: encoder forward, out[b,t,:] = wte[inp[b,t],:] + wpe[t,:].
//   out (B,T,C), inp (B,T) int token ids < Vp, wte (Vp,C), wpe (maxT,C), T <= maxT.
// Versions (both ship in llmc/encoder.cuh, included below: the trainer's encoder_forward uses 2,
// and 1 where C % 4 != 0):
//   1: one thread per output element.
//   2: one thread per 4 consecutive channels with float4 loads and stores (C % 4 == 0).
// Memory-bound: the floor is reading wte rows and wpe (B*T*C + T*C floats, wpe mostly
// from cache) and writing out (B*T*C floats).
// Build: make cuda-workbenches; run: dev/cuda/bin/encoder_forward [version] [--check-only]
#include "common.h"
#include "../../llmc/encoder.cuh"

// ----------------------------------------------------------------------------
// CPU reference

static void encoder_forward_cpu(float* out, const int* inp, const float* wte, const float* wpe,
                                int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* we = wte + (size_t)inp[b * T + t] * C;
            const float* pe = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
        }
    }
}

// ----------------------------------------------------------------------------
// kernels

// versions 1 and 2: encoder_forward_kernel1 and encoder_forward_kernel2 of llmc/encoder.cuh

static void encoder_forward(int version, float* out, const int* inp, const float* wte, const float* wpe,
                            int B, int T, int C, int block_size) {
    size_t N = (size_t)B * T * C;
    if (version == 1) {
        encoder_forward_kernel1<<<ceil_div(N, block_size), block_size>>>(out, inp, wte, wpe, B, T, C);
    } else {
        encoder_forward_kernel2<<<ceil_div(N / 4, block_size), block_size>>>(
            (float4*)out, inp, (const float4*)wte, (const float4*)wpe, B, T, C);
    }
    launchCheck();
}

// ----------------------------------------------------------------------------

static void check_shape(int version, int B, int T, int C, int Vp, int maxT) {
    if (version == 2 && C % 4 != 0) return;  // version 2 requires C % 4 == 0
    float* wte = make_random_float((size_t)Vp * C, -1.0f, 1.0f);
    float* wpe = make_random_float((size_t)maxT * C, -1.0f, 1.0f);
    int* inp = make_random_int((size_t)B * T, Vp);
    float* ref = (float*)malloc((size_t)B * T * C * sizeof(float));
    encoder_forward_cpu(ref, inp, wte, wpe, B, T, C);
    float* d_wte = to_device(wte, (size_t)Vp * C);
    float* d_wpe = to_device(wpe, (size_t)maxT * C);
    int* d_inp = to_device(inp, (size_t)B * T);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    printf("version %d, B=%d T=%d C=%d\n", version, B, T, C);
    int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    for (int block_size : block_sizes) {
        poison(d_out, (size_t)B * T * C);
        encoder_forward(version, d_out, d_inp, d_wte, d_wpe, B, T, C, block_size);
        // a sum of two floats: the GPU must give the same bits
        validate_result(d_out, ref, "out", (size_t)B * T * C, 0.0f, 0.0f);
    }
    cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_wpe)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out));
    free(wte); free(wpe); free(inp); free(ref);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 4, 64, 768, 50304, 1024);
        check_shape(v, 3, 7, 36, 128, 8);
        check_shape(v, 2, 5, 37, 128, 5);  // odd C: version 1 only
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    // benchmark at GPT-2 124M sizes
    int B = 16, T = 1024, C = 768, Vp = 50304;
    float* d_wte = device_random((size_t)Vp * C, -1.0f, 1.0f);
    float* d_wpe = device_random((size_t)T * C, -1.0f, 1.0f);
    int* inp = make_random_int((size_t)B * T, Vp);
    int* d_inp = to_device(inp, (size_t)B * T);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    double bytes = (2.0 * B * T * C + (double)T * C) * sizeof(float) + (double)B * T * sizeof(int);
    printf("benchmark B=%d T=%d C=%d (floor: %.1f MB moved)\n", B, T, C, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(50, [&]() {
                encoder_forward(v, d_out, d_inp, d_wte, d_wpe, B, T, C, block_size);
            });
            char what[64];
            snprintf(what, sizeof(what), "encoder_forward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_wpe)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out));
    free(inp);
    return 0;
}
