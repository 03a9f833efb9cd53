// llmc/matmul.cuh: the linear layers on cuBLAS (g_cublas), with the bias kernels.
// defines: g_cublas, add_bias_kernel, bias_partial_kernel, bias_final_kernel, matmul_forward, matmul_backward
//
// matmul_forward: out = inp @ weight^T (+ bias). matmul_backward: dinp is WRITTEN (=), dweight
// and dbias ACCUMULATE (+=); dbias in two deterministic stages (dev/cuda/matmul_backward_bias.cu
// version 2) through a scratch buffer of ceil(N / ROWS_PER_CHUNK) * OC floats.
// TF32 or exact fp32 is g_cublas's math mode, which the program sets.
#ifndef LLMC_MATMUL_CUH
#define LLMC_MATMUL_CUH

#include "cuda_common.cuh"

// the program's one cuBLAS handle (here and attention.cuh version 1); the program creates it
static cublasHandle_t g_cublas;

// out[r, c] += bias[c]
__global__ void add_bias_kernel(float* out, const float* bias, size_t N, int OC) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * OC) return;
    out[idx] += bias[idx % OC];
}

// partial (num_chunks, OC); block (32, ny)
__global__ void bias_partial_kernel(float* partial, const float* dout, int N, int OC) {
    extern __shared__ float sh[];  // 32 * ny floats
    int tx = threadIdx.x, ty = threadIdx.y, ny = blockDim.y;
    int c = blockIdx.x * 32 + tx;
    int r0 = blockIdx.y * ROWS_PER_CHUNK;
    int r1 = min(N, r0 + ROWS_PER_CHUNK);
    float s = 0.0f;
    if (c < OC) {
        for (int r = r0 + ty; r < r1; r += ny) s += dout[(size_t)r * OC + c];
    }
    sh[ty * 32 + tx] = s;
    __syncthreads();
    if (ty == 0 && c < OC) {
        float t = 0.0f;
        for (int y = 0; y < ny; y++) t += sh[y * 32 + tx];
        partial[(size_t)blockIdx.y * OC + c] = t;
    }
}

__global__ void bias_final_kernel(float* dbias, const float* partial, int num_chunks, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s = 0.0f;
    for (int k = 0; k < num_chunks; k++) s += partial[(size_t)k * OC + c];
    dbias[c] += s;
}

// out = inp @ weight^T + bias. Row-major (N, OC) is column-major (OC, N):
// out^T = weight (as column-major (IC, OC))^T @ inp^T.
static void matmul_forward(float* out,                              // (N, OC)
                           const float* inp,                        // (N, IC)
                           const float* weight, const float* bias,  // (OC, IC), (OC) or NULL
                           int N, int IC, int OC) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, weight, IC, inp, IC, &zero, out, OC));
    if (bias != NULL) {
        const int block = 256;
        add_bias_kernel<<<ceil_div((size_t)N * OC, block), block>>>(out, bias, (size_t)N, OC);
        launchCheck();
    }
}

// dinp = dout @ weight (WRITTEN); dweight += dout^T @ inp unless dweight is NULL (a frozen weight:
// LoRA); dbias += column sums of dout unless NULL.
// scratch: ceil(N/256) * OC floats when dbias != NULL.
static void matmul_backward(float* dinp, float* dweight, float* dbias,  // (N, IC), (OC, IC) or NULL, (OC) or NULL
                            float* scratch,
                            const float* dout,                          // (N, OC)
                            const float* inp, const float* weight,      // (N, IC), (OC, IC)
                            int N, int IC, int OC) {
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, weight, IC, dout, OC, &zero, dinp, IC));
    if (dweight != NULL) {
        cublasCheck(cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, IC, dout, OC, &one, dweight, IC));
    }
    if (dbias != NULL) {
        const int block = 256;
        int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
        dim3 pblock(32, block / 32), pgrid(ceil_div(OC, 32), num_chunks);
        bias_partial_kernel<<<pgrid, pblock, block * sizeof(float)>>>(scratch, dout, N, OC);
        launchCheck();
        bias_final_kernel<<<ceil_div(OC, block), block>>>(dbias, scratch, num_chunks, OC);
        launchCheck();
    }
}

#endif  // LLMC_MATMUL_CUH
