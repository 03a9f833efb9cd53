// Workbench: causal multi-head self-attention backward. WRITES dqkv (=, not +=).
//   inputs:  dout (B,T,C), qkv (B,T,3C), and from the forward pass out (B,T,C) and
//            lse (B,NH,T) (log-sum-exp of each row of scaled scores)
//   output:  dqkv (B,T,3C) = [dq | dk | dv] per token
//   With P = softmax(q k^T / sqrt(HS)) (causal), dO the head's slice of dout:
//     dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = dS K / sqrt(HS),
//     dK = dS^T Q / sqrt(HS)     (rowsum(dO * O) = rowsum(P * dP), the softmax backward)
// Versions (all three ship in llmc/attention.cuh, included here; the trainer's --attention
// cublas, fused and fused-tf32, ATTENTION_CUBLAS = 1, ATTENTION_FUSED = 2, ATTENTION_FUSED_TF32 = 3;
// each with the trainer's launch configuration; version 1 is checked without dropout here,
// tests/test_gpu_regularizers.py checks it with):
//   1: cuBLAS. Recomputes P (q k^T, causal softmax) into a (B,NH,T,T) buffer, then
//      five strided-batched SGEMMs and a softmax-backward kernel; needs two T x T buffers.
//   2: fused, flash-attention-2 style on the SIMT cores, never storing a T x T matrix:
//      a kernel computes D = rowsum(dO * O) (B,NH,T); a dK/dV kernel has a block per 64
//      keys walk the query tiles (32 rows) at or below the diagonal, recomputing P from
//      lse; a dQ kernel has a block per 64 queries walk the key tiles (32). Two passes
//      instead of atomics: every element of dqkv is written once, the result is
//      bit-reproducible. HS in {16, 32, 64, 128}.
//   3: version 2's two passes on the TF32 tensor cores (WMMA m16n16k8): 4 warps own 16 keys
//      (dK/dV kernel) or 16 queries (dQ kernel) each; the score-shaped products go through
//      shared memory for the elementwise P and dS, the dK, dV, dQ accumulators stay in WMMA
//      fragments. Tiles of 64 by 64. sm_80+, HS in {16, 32, 64}; TF32 inputs, fp32 sums.
// Arithmetic (causal): version 2 does 7 products of B*NH*T*T/2*HS FMAs (S twice, dP
// twice, dV, dK, dQ), i.e. 7*B*NH*T*T*HS FLOPs.
// Build: make cuda-workbenches; run: dev/cuda/bin/attention_backward [version] [--check-only]
#include "common.h"
#include "../../llmc/attention.cuh"
#include "attention_cpu.h"

// ----------------------------------------------------------------------------
// CPU reference (double): the backward pass (the forward one, for out and lse: attention_cpu.h)

static void attention_backward_cpu(float* dqkv, const float* dout, const float* qkv, int B, int T, int NH, int HS) {
    int C = NH * HS;
    double scale = 1.0 / sqrt((double)HS);
    std::vector<double> g((size_t)B * T * 3 * C, 0.0), att(T), datt(T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                size_t qrow = ((size_t)b * T + t) * 3 * C + h * HS;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    size_t krow = ((size_t)b * T + s) * 3 * C + C + h * HS;
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++) dot += (double)qkv[qrow + d] * qkv[krow + d];
                    att[s] = dot * scale;
                    mx = fmax(mx, att[s]);
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { att[s] = exp(att[s] - mx); sum += att[s]; }
                for (int s = 0; s <= t; s++) att[s] /= sum;
                const float* dy = dout + ((size_t)b * T + t) * C + h * HS;
                double dot_ad = 0.0;
                for (int s = 0; s <= t; s++) {
                    size_t vrow = ((size_t)b * T + s) * 3 * C + 2 * C + h * HS;
                    double a = 0.0;
                    for (int d = 0; d < HS; d++) {
                        a += (double)dy[d] * qkv[vrow + d];
                        g[vrow + d] += att[s] * dy[d];  // dv
                    }
                    datt[s] = a;
                    dot_ad += att[s] * a;
                }
                for (int s = 0; s <= t; s++) {
                    double dpre = att[s] * (datt[s] - dot_ad) * scale;
                    size_t krow = ((size_t)b * T + s) * 3 * C + C + h * HS;
                    for (int d = 0; d < HS; d++) {
                        g[qrow + d] += dpre * qkv[krow + d];  // dq
                        g[krow + d] += dpre * qkv[qrow + d];  // dk
                    }
                }
            }
    for (size_t i = 0; i < g.size(); i++) dqkv[i] = (float)g[i];
}

// ----------------------------------------------------------------------------
// versions 1, 2, 3: llmc/attention.cuh, the trainer's attention_backward, whose ATTENTION_CUBLAS,
// ATTENTION_FUSED and ATTENTION_FUSED_TF32 are these version numbers; attention_state_alloc
// holds each version's buffers

static void check_shape(int version, const cudaDeviceProp& prop, int B, int T, int NH, int HS) {
    if (!attention_kind_supported(version, HS, &prop)) {
        printf("version %d, HS=%d: not supported on this device (head size, shared memory or sm_80), skipped\n", version, HS);
        return;
    }
    int C = NH * HS;
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    float* qkv = make_random_float(nqkv, -2.0f, 2.0f);
    float* dout = make_random_float(nout, -1.0f, 1.0f);
    float* out = (float*)malloc(nout * sizeof(float));
    float* lse = (float*)malloc(nlse * sizeof(float));
    float* ref = (float*)malloc(nqkv * sizeof(float));
    attention_forward_cpu(out, lse, qkv, B, T, NH, HS);
    attention_backward_cpu(ref, dout, qkv, B, T, NH, HS);
    float* d_qkv = to_device(qkv, nqkv);
    float* d_dout = to_device(dout, nout);
    float* d_out = to_device(out, nout);
    float* d_lse = to_device(lse, nlse);
    float* d_dqkv = device_alloc<float>(nqkv);
    AttentionState at;
    attention_state_alloc(&at, version, B, T, NH, HS);
    printf("version %d, B=%d T=%d NH=%d HS=%d\n", version, B, T, NH, HS);
    {  // every version has fixed blocks (the trainer's): one run
        poison(d_dqkv, nqkv);
        attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, &at, NULL, 0, B, T, NH, HS);
        if (version == 3) {
            // TF32 inputs (10 mantissa bits): the products of every step carry ~5e-4 relative
            // error; gradients of size ~1 end up within a few 1e-3
            validate_result(d_dqkv, ref, "dqkv", nqkv, 5e-3f, 5e-3f);
        } else {
            // fp32 sums of up to T products against a double reference
            validate_result(d_dqkv, ref, "dqkv", nqkv, 1e-5f, 1e-4f);
        }
    }
    attention_state_free(&at);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_dqkv));
    free(qkv); free(dout); free(out); free(lse); free(ref);
}

int main(int argc, char** argv) {
    const int num_versions = 3;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    cublasCheck(cublasCreate(&g_cublas));  // version 1's products (llmc/matmul.cuh's handle)
    cublasCheck(cublasSetMathMode(g_cublas, CUBLAS_PEDANTIC_MATH));
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, prop, 2, 64, 2, 64);
        check_shape(v, prop, 1, 200, 3, 32);
        check_shape(v, prop, 2, 37, 2, 16);
        check_shape(v, prop, 1, 70, 1, 128);
        check_shape(v, prop, 3, 5, 4, 32);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    cublasCheck(cublasSetMathMode(g_cublas, CUBLAS_TF32_TENSOR_OP_MATH));
    int B = 8, T = 1024, NH = 12, HS = 64, C = NH * HS;
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    float* d_qkv = device_random(nqkv, -2.0f, 2.0f);
    float* d_dout = device_random(nout, -1.0f, 1.0f);
    float* d_out = device_random(nout, -1.0f, 1.0f);
    float* d_lse = device_random(nlse, 3.0f, 4.0f);
    float* d_dqkv = device_alloc<float>(nqkv);
    double flops_causal = 7.0 * B * NH * (double)T * T * HS;  // 7 products of T*T/2*HS FMAs
    printf("benchmark B=%d T=%d NH=%d HS=%d: %.1f GFLOP (version 2's causal count)\n", B, T, NH, HS, flops_causal / 1e9);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        if (!attention_kind_supported(v, HS, &prop)) continue;
        AttentionState at;
        attention_state_alloc(&at, v, B, T, NH, HS);
        float ms = benchmark_kernel(10, [&]() {
            attention_backward(d_dqkv, d_dout, d_qkv, d_out, d_lse, &at, NULL, 0, B, T, NH, HS);
        });
        char what[64];
        snprintf(what, sizeof(what), "attention_backward v%d", v);
        report_time(what, v == 1 ? 256 : v == 2 ? ATT_THREADS : TC_THREADS, ms, 0, flops_causal);
        attention_state_free(&at);
    }
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_dqkv));
    cublasCheck(cublasDestroy(g_cublas));
    return 0;
}
