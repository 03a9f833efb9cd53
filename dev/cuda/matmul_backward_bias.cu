// Workbench: bias gradient of a matmul, ACCUMULATING (+=): dbias[oc] += sum_r dout[r, oc]
//   dout (N, OC) with N = B*T rows; dbias (OC).
// Version 2 ships: llmc/matmul.cuh (included below), in the trainer's matmul_backward.
// Versions:
//   1: one thread per column, all N rows in order (little parallelism: OC threads).
//   2: deterministic two stages: blocks of (32 columns x a chunk of rows) write
//      partial sums (num_chunks, OC), then one thread per column adds them in chunk
//      order. No atomics: the same inputs give the same bits.
// Memory-bound: floor is reading dout once, 4*N*OC bytes.
// Build: make cuda-workbenches; run: dev/cuda/bin/matmul_backward_bias [version] [--check-only]
#include "common.h"
#include "../../llmc/matmul.cuh"

static void bias_backward_cpu(float* dbias, const float* dout, int N, int OC) {
    std::vector<double> s(OC, 0.0);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < OC; c++) s[c] += dout[(size_t)r * OC + c];
    for (int c = 0; c < OC; c++) dbias[c] += (float)s[c];
}

// version 1: a thread per column adds all N rows in order, which is the shipped
// bias_final_kernel (llmc/matmul.cuh) applied to dout itself

// version 2 (llmc/matmul.cuh, the trainer's matmul_backward with block 256):
// bias_partial_kernel, blocks (32, ny) over 32 columns and a chunk of ROWS_PER_CHUNK rows writing
// partial sums (num_chunks, OC), and bias_final_kernel, a thread per column adding them in order.

// scratch: ceil(N / ROWS_PER_CHUNK) * OC floats (version 2)
static void bias_backward(int version, float* dbias, float* scratch, const float* dout, int N, int OC, int block_size) {
    if (version == 1) {
        bias_final_kernel<<<ceil_div(OC, block_size), block_size>>>(dbias, dout, N, OC);
        launchCheck();
        return;
    }
    int num_chunks = ceil_div(N, ROWS_PER_CHUNK);
    dim3 block(32, block_size / 32), grid(ceil_div(OC, 32), num_chunks);
    bias_partial_kernel<<<grid, block, block_size * sizeof(float)>>>(scratch, dout, N, OC);
    launchCheck();
    bias_final_kernel<<<ceil_div(OC, 256), 256>>>(dbias, scratch, num_chunks, OC);
    launchCheck();
}

static void check_shape(int version, int N, int OC) {
    float* dout = make_random_float((size_t)N * OC, -1.0f, 1.0f);
    float* db0 = make_random_float(OC, -1.0f, 1.0f);
    std::vector<float> ref(db0, db0 + OC);
    bias_backward_cpu(ref.data(), dout, N, OC);
    float* d_dout = to_device(dout, (size_t)N * OC);
    float* d_db = device_alloc<float>(OC);
    float* d_scratch = device_alloc<float>((size_t)ceil_div(N, ROWS_PER_CHUNK) * OC);
    printf("version %d, N=%d OC=%d\n", version, N, OC);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        cudaCheck(cudaMemcpy(d_db, db0, OC * sizeof(float), cudaMemcpyHostToDevice));
        bias_backward(version, d_db, d_scratch, d_dout, N, OC, block_size);
        // float sums of N terms of size <= 1 (see layernorm_backward.cu for the 1e-6 * N)
        validate_result(d_db, ref.data(), "dbias", OC, 1e-6f * N, 1e-5f);
    }
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_scratch));
    free(dout); free(db0);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 1024, 768);
        check_shape(v, 1000, 3 * 64);
        check_shape(v, 37, 33);
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    int N = 16 * 1024;
    float* d_dout = device_random((size_t)N * 4 * 768, -1.0f, 1.0f);
    float* d_db = device_random(4 * 768, -1.0f, 1.0f);
    float* d_scratch = device_alloc<float>((size_t)ceil_div(N, ROWS_PER_CHUNK) * 4 * 768);
    for (int OC : {768, 3 * 768, 4 * 768}) {
        double bytes = 4.0 * N * OC;
        printf("benchmark N=%d OC=%d (floor: %.1f MB moved)\n", N, OC, bytes / 1e6);
        for (int v = 1; v <= num_versions; v++) {
            if (args.version != 0 && args.version != v) continue;
            for (int block_size : {256, 512, 1024}) {
                float ms = benchmark_kernel(20, [&]() { bias_backward(v, d_db, d_scratch, d_dout, N, OC, block_size); });
                char what[64];
                snprintf(what, sizeof(what), "bias_backward v%d", v);
                report_time(what, block_size, ms, bytes, 0);
            }
        }
    }
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_scratch));
    return 0;
}
