// llmc/lora.cuh: the LoRA term of a targeted matmul on cuBLAS (llmc/lora.h; train_gpt2.c's
// lora_forward and lora_backward compute the same).
// defines: lora_forward, lora_backward
//
// lora_forward: out (N, OUT) += u @ B^T with u = scale * inp @ A^T (N, r) kept for the backward.
// lora_backward: dB += dout^T u, du = scale * dout @ B (scratch, WRITTEN), dA += du^T inp, and
// dinp += du @ A (ACCUMULATES, after matmul_backward wrote the frozen weight's part). The scale
// rides in cuBLAS's alpha. Row-major (N, K) is column-major (K, N), as in matmul.cuh.
#ifndef LLMC_LORA_CUH
#define LLMC_LORA_CUH

#include "matmul.cuh"

static void lora_forward(float* out, float* u, const float* inp, const float* A, const float* B, float scale, int N,
                         int IN, int OUT, int r) {
    const float one = 1.0f, zero = 0.0f;
    // u^T (r, N) = scale * A (as column-major (IN, r))^T @ inp^T
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, r, N, IN, &scale, A, IN, inp, IN, &zero, u, r));
    // out^T (OUT, N) += B (column-major (r, OUT))^T @ u^T
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, r, &one, B, r, u, r, &one, out, OUT));
}

static void lora_backward(float* dinp, float* dA, float* dB, float* du, const float* dout, const float* inp,
                          const float* u, const float* A, const float* B, float scale, int N, int IN, int OUT, int r) {
    const float one = 1.0f, zero = 0.0f;
    // dB (OUT, r) += dout^T @ u: column-major dB^T (r, OUT) += u^T (r, N) @ dout (N, OUT)
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, r, OUT, N, &one, u, r, dout, OUT, &one, dB, r));
    // du (N, r) = scale * dout @ B: column-major du^T (r, N) = scale * B^T (r, OUT) @ dout^T (OUT, N)
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, r, N, OUT, &scale, B, r, dout, OUT, &zero, du, r));
    // dA (r, IN) += du^T @ inp: column-major dA^T (IN, r) += inp^T (IN, N) @ du (N, r)
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, IN, r, N, &one, inp, IN, du, r, &one, dA, IN));
    // dinp (N, IN) += du @ A: column-major dinp^T (IN, N) += A^T (IN, r) @ du^T (r, N)
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, r, &one, A, IN, du, r, &one, dinp, IN));
}

#endif  // LLMC_LORA_CUH
