// Workbench: LayerNorm backward. All three outputs ACCUMULATE (+=):
//   norm = (x - mean) * rstd,  dnorm = weight * dout
//   dinp[r,c]  += rstd[r] * (dnorm - mean_c(dnorm) - norm * mean_c(dnorm * norm))
//   dweight[c] += sum_r norm[r,c] * dout[r,c]
//   dbias[c]   += sum_r dout[r,c]
//   dinp, dout, inp (N,C) with N = B*T; dweight, dbias, weight (C); mean, rstd (N).
// Version 2 ships: llmc/layernorm.cuh (included below), the trainer's layernorm_backward.
// Versions:
//   1: one thread per row for dinp; one thread per channel looping over all rows
//      for dweight and dbias.
//   2: one warp per row for dinp (shuffle reductions); dweight and dbias in two
//      deterministic stages: blocks of (32 channels x a chunk of rows) write partial
//      sums to a scratch buffer (num_chunks, 2, C), then one thread per channel adds
//      the partials in chunk order. No atomics: the same inputs give the same bits.
// Memory-bound: floor is reading dout, inp and dinp and writing dinp, 4*N*C floats
// (version 2 reads dout and inp twice: 6*N*C).
// Build: make cuda-workbenches; run: dev/cuda/bin/layernorm_backward [version] [--check-only]
#include "common.h"
#include "../../llmc/layernorm.cuh"

// ----------------------------------------------------------------------------
// CPU reference (double)

static void layernorm_backward_cpu(float* dinp, float* dweight, float* dbias, const float* dout,
                                   const float* inp, const float* weight, const float* mean,
                                   const float* rstd, int N, int C) {
    std::vector<double> dw(C, 0.0), db(C, 0.0);
    for (int r = 0; r < N; r++) {
        const float* x = inp + (size_t)r * C;
        const float* d = dout + (size_t)r * C;
        double a = 0.0, b = 0.0;
        for (int c = 0; c < C; c++) {
            double n = (x[c] - (double)mean[r]) * rstd[r];
            double dn = (double)weight[c] * d[c];
            a += dn;
            b += dn * n;
        }
        a /= C;
        b /= C;
        for (int c = 0; c < C; c++) {
            double n = (x[c] - (double)mean[r]) * rstd[r];
            double dn = (double)weight[c] * d[c];
            dinp[(size_t)r * C + c] += (float)(rstd[r] * (dn - a - n * b));
            dw[c] += n * d[c];
            db[c] += d[c];
        }
    }
    for (int c = 0; c < C; c++) { dweight[c] += (float)dw[c]; dbias[c] += (float)db[c]; }
}

// ----------------------------------------------------------------------------
// kernels

// version 1, dinp: thread per row
__global__ void layernorm_dinp_kernel1(float* dinp, const float* dout, const float* inp, const float* weight,
                                       const float* mean, const float* rstd, int N, int C) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= N) return;
    const float* x = inp + (size_t)r * C;
    const float* d = dout + (size_t)r * C;
    float m = mean[r], s = rstd[r];
    float a = 0.0f, b = 0.0f;
    for (int c = 0; c < C; c++) {
        float n = (x[c] - m) * s;
        float dn = weight[c] * d[c];
        a += dn;
        b += dn * n;
    }
    a /= C;
    b /= C;
    float* g = dinp + (size_t)r * C;
    for (int c = 0; c < C; c++) {
        float n = (x[c] - m) * s;
        g[c] += s * (weight[c] * d[c] - a - n * b);
    }
}

// version 1, dweight and dbias: thread per channel, all rows in order
__global__ void layernorm_params_kernel1(float* dweight, float* dbias, const float* dout, const float* inp,
                                         const float* mean, const float* rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float dw = 0.0f, db = 0.0f;
    for (int r = 0; r < N; r++) {
        float d = dout[(size_t)r * C + c];
        dw += (inp[(size_t)r * C + c] - mean[r]) * rstd[r] * d;
        db += d;
    }
    dweight[c] += dw;
    dbias[c] += db;
}

// version 2 (llmc/layernorm.cuh, the trainer's layernorm_backward with block 256):
// layernorm_dinp_kernel2, a warp per row; layernorm_params_partial_kernel, blocks (32, ny) over
// 32 channels and a chunk of ROWS_PER_CHUNK rows writing partial sums (num_chunks, 2, C); and
// layernorm_params_final_kernel, a thread per channel adding the partials in chunk order.

// scratch: at least 2 * ceil(N / ROWS_PER_CHUNK) * C floats (version 2)
static void layernorm_backward(int version, float* dinp, float* dweight, float* dbias, float* scratch,
                               const float* dout, const float* inp, const float* weight, const float* mean,
                               const float* rstd, int N, int C, int block_size) {
    if (version == 1) {
        layernorm_dinp_kernel1<<<ceil_div(N, block_size), block_size>>>(dinp, dout, inp, weight, mean, rstd, N, C);
        launchCheck();
        layernorm_params_kernel1<<<ceil_div(C, block_size), block_size>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
        launchCheck();
        return;
    }
    layernorm_dinp_kernel2<<<ceil_div(N, block_size / 32), block_size>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    launchCheck();
    int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
    dim3 block(32, block_size / 32);
    dim3 grid(ceil_div(C, 32), num_chunks);
    size_t shmem = 2 * (size_t)block_size * sizeof(float);
    layernorm_params_partial_kernel<<<grid, block, shmem>>>(scratch, dout, inp, mean, rstd, N, C);
    launchCheck();
    layernorm_params_final_kernel<<<ceil_div(C, 256), 256>>>(dweight, dbias, scratch, num_chunks, C);
    launchCheck();
}

// ----------------------------------------------------------------------------

static void check_shape(int version, int N, int C) {
    float* inp = make_random_float((size_t)N * C, -3.0f, 5.0f);
    float* dout = make_random_float((size_t)N * C, -1.0f, 1.0f);
    float* w = make_random_float(C, 0.5f, 1.5f);
    float* dinp0 = make_random_float((size_t)N * C, -1.0f, 1.0f);  // += : start nonzero
    float* dw0 = make_random_float(C, -1.0f, 1.0f);
    float* db0 = make_random_float(C, -1.0f, 1.0f);
    // mean and rstd as the forward pass computes them
    float* mean = (float*)malloc(N * sizeof(float));
    float* rstd = (float*)malloc(N * sizeof(float));
    for (int r = 0; r < N; r++) {
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += inp[(size_t)r * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (inp[(size_t)r * C + c] - m) * (inp[(size_t)r * C + c] - m);
        mean[r] = (float)m;
        rstd[r] = (float)(1.0 / sqrt(v / C + 1e-5));
    }
    std::vector<float> ref_dinp(dinp0, dinp0 + (size_t)N * C), ref_dw(dw0, dw0 + C), ref_db(db0, db0 + C);
    layernorm_backward_cpu(ref_dinp.data(), ref_dw.data(), ref_db.data(), dout, inp, w, mean, rstd, N, C);

    float* d_inp = to_device(inp, (size_t)N * C);
    float* d_dout = to_device(dout, (size_t)N * C);
    float* d_w = to_device(w, C);
    float* d_mean = to_device(mean, N);
    float* d_rstd = to_device(rstd, N);
    float* d_dinp = device_alloc<float>((size_t)N * C);
    float* d_dw = device_alloc<float>(C);
    float* d_db = device_alloc<float>(C);
    size_t scratch_n = 2 * (size_t)ceil_div(N, ROWS_PER_CHUNK) * C;
    float* d_scratch = device_alloc<float>(scratch_n);
    printf("version %d, N=%d C=%d\n", version, N, C);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        cudaCheck(cudaMemcpy(d_dinp, dinp0, (size_t)N * C * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_dw, dw0, C * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_db, db0, C * sizeof(float), cudaMemcpyHostToDevice));
        poison(d_scratch, scratch_n);
        layernorm_backward(version, d_dinp, d_dw, d_db, d_scratch, d_dout, d_inp, d_w, d_mean, d_rstd, N, C, block_size);
        // dinp: float sums of C terms; dweight/dbias: float sums of N terms of size ~1,
        // whose running sums reach ~sqrt(N): a sequential float sum can be off by
        // ~N * 2^-24 * sqrt(N) in the worst case, so atol grows with N (1e-3 at N=1024,
        // still 1e3 times under the O(1) error of a wrong index)
        float atol_sum = 1e-6f * N;
        validate_result(d_dinp, ref_dinp.data(), "dinp", (size_t)N * C, 1e-5f, 1e-4f);
        validate_result(d_dw, ref_dw.data(), "dweight", C, atol_sum, 1e-5f);
        validate_result(d_db, ref_db.data(), "dbias", C, atol_sum, 1e-5f);
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_w));
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dinp));
    cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_scratch));
    free(inp); free(dout); free(w); free(dinp0); free(dw0); free(db0); free(mean); free(rstd);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 8 * 128, 768);
        check_shape(v, 37, 64);
        check_shape(v, 5, 33);
        check_shape(v, 700, 1600);  // N not a multiple of the row chunk
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    int N = 16 * 1024, C = 768;
    float* d_inp = device_random((size_t)N * C, -3.0f, 5.0f);
    float* d_dout = device_random((size_t)N * C, -1.0f, 1.0f);
    float* d_w = device_random(C, 0.5f, 1.5f);
    float* d_mean = device_random(N, 0.5f, 1.5f);
    float* d_rstd = device_random(N, 0.2f, 0.5f);
    float* d_dinp = device_random((size_t)N * C, -1.0f, 1.0f);
    float* d_dw = device_random(C, -1.0f, 1.0f);
    float* d_db = device_random(C, -1.0f, 1.0f);
    float* d_scratch = device_alloc<float>(2 * (size_t)ceil_div(N, ROWS_PER_CHUNK) * C);
    double bytes = 4.0 * N * C * sizeof(float);
    printf("benchmark N=%d C=%d (floor: %.1f MB moved)\n", N, C, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(20, [&]() {
                layernorm_backward(v, d_dinp, d_dw, d_db, d_scratch, d_dout, d_inp, d_w, d_mean, d_rstd, N, C, block_size);
            });
            char what[64];
            snprintf(what, sizeof(what), "layernorm_backward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_w));
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dinp));
    cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_scratch));
    return 0;
}
