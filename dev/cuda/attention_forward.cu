// Workbench: causal multi-head self-attention forward.
//   qkv (B,T,3C): per token [q | k | v], each C = NH*HS wide, head h at [h*HS, (h+1)*HS)
//   out (B,T,C):  out[b,t,h*HS+d] = sum_{s<=t} softmax_s(q_t . k_s / sqrt(HS)) v[s,d]
//   lse (B,NH,T): log-sum-exp of each row of scaled scores (saved for the backward pass)
// Versions (all three ship in llmc/attention.cuh, included here; the trainer's --attention
// cublas, fused and fused-tf32, ATTENTION_CUBLAS = 1, ATTENTION_FUSED = 2, ATTENTION_FUSED_TF32 = 3;
// each with the trainer's launch configuration):
//   1: cuBLAS. Permute qkv into q, k, v (B,NH,T,HS); preatt = q k^T (strided-batched
//      SGEMM with alpha = 1/sqrt(HS)) into a (B,NH,T,T) buffer; a warp-per-row causal
//      softmax kernel (in place, also writes lse); y = att v (SGEMM); unpermute into out.
//      Moves the whole T x T matrix through memory four times.
//   2: fused, flash-attention style, fp32 FMA on the SIMT cores: a block of 256 threads
//      owns 64 query rows of one (b,h) and walks the key tiles of 64 up to the diagonal,
//      keeping a running max and sum per row (online softmax); the T x T matrix never
//      leaves shared memory. Each thread computes a 4x4 tile of scores and a 4 x HS/16
//      tile of the output from shared memory (float4 loads). HS in {16, 32, 64, 128}.
//   3: version 2's algorithm on the TF32 tensor cores (WMMA m16n16k8): 4 warps own 16
//      query rows each; S = Q K^T and P V are WMMA products (inputs rounded to TF32,
//      fp32 accumulation); S goes through shared memory for the online softmax, which a
//      pair of lanes runs per row; the output accumulates in registers. sm_80+,
//      HS in {16, 32, 64}. TF32 rounding: compare with a looser tolerance.
// Arithmetic: 4*B*NH*T*T*HS FLOPs for the two products if computed in full (version 1),
// about half that with the causal skip (version 2).
// Build: make cuda-workbenches; run: dev/cuda/bin/attention_forward [version] [--check-only]
#include "common.h"
#include "../../llmc/attention.cuh"
#include "attention_cpu.h"

// ----------------------------------------------------------------------------
// versions 1, 2, 3: llmc/attention.cuh, the trainer's attention_forward, whose ATTENTION_CUBLAS,
// ATTENTION_FUSED and ATTENTION_FUSED_TF32 are these version numbers; attention_state_alloc holds
// each version's buffers

static void check_shape(int version, const cudaDeviceProp& prop, int B, int T, int NH, int HS) {
    if (!attention_kind_supported(version, HS, &prop)) {
        printf("version %d, HS=%d: not supported on this device (head size, shared memory or sm_80), skipped\n", version, HS);
        return;
    }
    int C = NH * HS;
    float* qkv = make_random_float((size_t)B * T * 3 * C, -2.0f, 2.0f);  // peaked softmax rows
    float* ref = (float*)malloc((size_t)B * T * C * sizeof(float));
    float* ref_lse = (float*)malloc((size_t)B * NH * T * sizeof(float));
    attention_forward_cpu(ref, ref_lse, qkv, B, T, NH, HS);
    float* d_qkv = to_device(qkv, (size_t)B * T * 3 * C);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    float* d_lse = device_alloc<float>((size_t)B * NH * T);
    AttentionState at;
    attention_state_alloc(&at, version, B, T, NH, HS);
    printf("version %d, B=%d T=%d NH=%d HS=%d\n", version, B, T, NH, HS);
    // every version has fixed blocks (the trainer's): one run each
    {
        poison(d_out, (size_t)B * T * C);
        poison(d_lse, (size_t)B * NH * T);
        attention_forward(d_out, d_lse, d_qkv, &at, NULL, 0, B, T, NH, HS);
        if (version == 3) {
            // TF32 keeps 10 mantissa bits: each product is off by up to ~2^-11 relative, scores
            // of size ~2 by ~2e-3, so probabilities and outputs by a few 1e-3
            validate_result(d_out, ref, "out", (size_t)B * T * C, 5e-3f, 5e-3f);
            validate_result(d_lse, ref_lse, "lse", (size_t)B * NH * T, 5e-3f, 1e-3f);
        } else {
            // fp32 dot products of HS terms and sums of up to T terms vs a double reference
            validate_result(d_out, ref, "out", (size_t)B * T * C, 1e-5f, 1e-4f);
            validate_result(d_lse, ref_lse, "lse", (size_t)B * NH * T, 1e-5f, 1e-5f);
        }
    }
    attention_state_free(&at);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse));
    free(qkv); free(ref); free(ref_lse);
}

int main(int argc, char** argv) {
    const int num_versions = 3;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    cublasCheck(cublasCreate(&g_cublas));  // version 1's products (llmc/matmul.cuh's handle)
    cublasCheck(cublasSetMathMode(g_cublas, CUBLAS_PEDANTIC_MATH));  // fp32 exact for the check
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, prop, 2, 64, 2, 64);
        check_shape(v, prop, 1, 200, 3, 32);  // T not a multiple of 64
        check_shape(v, prop, 2, 37, 2, 16);
        check_shape(v, prop, 1, 70, 1, 128);
        check_shape(v, prop, 3, 5, 4, 32);    // T smaller than a tile
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    // GPT-2 124M, one layer: B=8 T=1024 NH=12 HS=64, with TF32 on for version 1
    cublasCheck(cublasSetMathMode(g_cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    int B = 8, T = 1024, NH = 12, HS = 64, C = NH * HS;
    float* d_qkv = device_random((size_t)B * T * 3 * C, -2.0f, 2.0f);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    float* d_lse = device_alloc<float>((size_t)B * NH * T);
    double flops_full = 4.0 * B * NH * (double)T * T * HS;
    double flops_causal = flops_full / 2;
    printf("benchmark B=%d T=%d NH=%d HS=%d: %.1f GFLOP causal (%.1f computed in full)\n", B, T, NH, HS,
           flops_causal / 1e9, flops_full / 1e9);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        if (!attention_kind_supported(v, HS, &prop)) continue;
        AttentionState at;
        attention_state_alloc(&at, v, B, T, NH, HS);
        float ms = benchmark_kernel(20, [&]() { attention_forward(d_out, d_lse, d_qkv, &at, NULL, 0, B, T, NH, HS); });
        char what[64];
        snprintf(what, sizeof(what), "attention_forward v%d", v);
        report_time(what, v == 1 ? 256 : v == 2 ? ATT_THREADS : TC_THREADS, ms, 0, flops_causal);
        attention_state_free(&at);
    }
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_lse));
    cublasCheck(cublasDestroy(g_cublas));
    return 0;
}
