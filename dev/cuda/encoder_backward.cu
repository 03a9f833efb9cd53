// Workbench: encoder backward, accumulating (+=) into the embedding gradients:
//   dwte[inp[b,t],:] += dout[b,t,:]     dwte (Vp,C)
//   dwpe[t,:]        += sum_b dout[b,t,:] dwpe (maxT,C)      dout (B,T,C), inp (B,T)
// Version 2 ships: llmc/encoder.cuh (included below), the trainer's encoder_backward.
// Versions:
//   1: one thread per dout element with atomicAdd into dwte and dwpe. The order of
//      the additions varies run to run, so the result is not bit-reproducible.
//   2: deterministic. dwpe: one thread per (t,c) sums over b in order. dwte: the host
//      groups the positions by token id (a counting sort of the B*T ids, which the
//      trainer has on the host anyway); one block per distinct token, each thread a
//      channel, adds that token's rows in position order. No atomics; the same
//      inputs always give the same bits.
// Memory-bound: floor is reading dout once (B*T*C floats) and a read-modify-write
// of the touched dwte rows and of dwpe.
// Build: make cuda-workbenches; run: dev/cuda/bin/encoder_backward [version] [--check-only]
#include "common.h"
#include "../../llmc/encoder.cuh"

// ----------------------------------------------------------------------------
// CPU reference

static void encoder_backward_cpu(float* dwte, float* dwpe, const float* dout, const int* inp,
                                 int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            float* gw = dwte + (size_t)inp[b * T + t] * C;
            float* gp = dwpe + (size_t)t * C;
            for (int c = 0; c < C; c++) { gw[c] += d[c]; gp[c] += d[c]; }
        }
    }
}

// ----------------------------------------------------------------------------
// kernels

// version 1: atomics
__global__ void encoder_backward_kernel1(float* dwte, float* dwpe, const float* dout, const int* inp,
                                         int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t N = (size_t)B * T * C;
    if (idx >= N) return;
    size_t bt = idx / C;
    int c = (int)(idx % C);
    int t = (int)(bt % T);
    atomicAdd(&dwte[(size_t)inp[bt] * C + c], dout[idx]);
    atomicAdd(&dwpe[(size_t)t * C + c], dout[idx]);
}

// version 2 (llmc/encoder.cuh, the trainer's): wpe_backward_kernel, a thread per (t,c) summing
// b = 0..B-1 in order, and wte_backward_kernel, a block per (token bucket, channel chunk) adding
// the bucket's rows in position order; the buckets come from encoder_buckets, a counting sort
// on the host into an EncoderBuckets.

static void encoder_backward(int version, float* dwte, float* dwpe, const float* dout, const int* d_inp,
                             const int* h_inp, EncoderBuckets* bk, int B, int T, int C, int Vp, int block_size) {
    size_t N = (size_t)B * T * C;
    if (version == 1) {
        encoder_backward_kernel1<<<ceil_div(N, block_size), block_size>>>(dwte, dwpe, dout, d_inp, B, T, C);
        launchCheck();
        return;
    }
    encoder_backward(dwte, dwpe, dout, h_inp, bk, B, T, C, Vp, block_size);  // version 2: llmc/encoder.cuh
}

static EncoderBuckets buckets_alloc(int BT, int Vp) {
    EncoderBuckets b;
    b.token = (int*)malloc(BT * sizeof(int));
    b.start = (int*)malloc((BT + 1) * sizeof(int));
    b.pos = (int*)malloc(BT * sizeof(int));
    b.count = (int*)calloc(Vp, sizeof(int));
    b.d_token = device_alloc<int>(BT);
    b.d_start = device_alloc<int>(BT + 1);
    b.d_pos = device_alloc<int>(BT);
    return b;
}
static void buckets_free(EncoderBuckets* b) {
    free(b->token); free(b->start); free(b->pos); free(b->count);
    cudaCheck(cudaFree(b->d_token)); cudaCheck(cudaFree(b->d_start)); cudaCheck(cudaFree(b->d_pos));
}

// ----------------------------------------------------------------------------

static void check_shape(int version, int B, int T, int C, int Vp, int maxT) {
    float* dwte0 = make_random_float((size_t)Vp * C, -1.0f, 1.0f);  // gradients accumulate: start nonzero
    float* dwpe0 = make_random_float((size_t)maxT * C, -1.0f, 1.0f);
    float* dout = make_random_float((size_t)B * T * C, -1.0f, 1.0f);
    int* inp = make_random_int((size_t)B * T, Vp);
    float* ref_wte = (float*)malloc((size_t)Vp * C * sizeof(float));
    float* ref_wpe = (float*)malloc((size_t)maxT * C * sizeof(float));
    memcpy(ref_wte, dwte0, (size_t)Vp * C * sizeof(float));
    memcpy(ref_wpe, dwpe0, (size_t)maxT * C * sizeof(float));
    encoder_backward_cpu(ref_wte, ref_wpe, dout, inp, B, T, C);
    float* d_dout = to_device(dout, (size_t)B * T * C);
    int* d_inp = to_device(inp, (size_t)B * T);
    float* d_dwte = device_alloc<float>((size_t)Vp * C);
    float* d_dwpe = device_alloc<float>((size_t)maxT * C);
    EncoderBuckets bk = buckets_alloc(B * T, Vp);
    printf("version %d, B=%d T=%d C=%d Vp=%d\n", version, B, T, C, Vp);
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        cudaCheck(cudaMemcpy(d_dwte, dwte0, (size_t)Vp * C * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_dwpe, dwpe0, (size_t)maxT * C * sizeof(float), cudaMemcpyHostToDevice));
        encoder_backward(version, d_dwte, d_dwpe, d_dout, d_inp, inp, &bk, B, T, C, Vp, block_size);
        // sums of up to B*T terms of size <= 1 in another order: a few ulps of the sum
        validate_result(d_dwte, ref_wte, "dwte", (size_t)Vp * C, 1e-5f, 1e-5f);
        validate_result(d_dwpe, ref_wpe, "dwpe", (size_t)maxT * C, 1e-5f, 1e-5f);
    }
    buckets_free(&bk);
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dwte)); cudaCheck(cudaFree(d_dwpe));
    free(dwte0); free(dwpe0); free(dout); free(inp); free(ref_wte); free(ref_wpe);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 4, 64, 768, 512, 64);   // many repeated tokens
        check_shape(v, 3, 7, 37, 128, 9);      // odd C, T < maxT
        check_shape(v, 2, 33, 1600, 4096, 64);  // C larger than a block
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    int B = 16, T = 1024, C = 768, Vp = 50304;
    float* d_dwte = device_random((size_t)Vp * C, -1.0f, 1.0f);
    float* d_dwpe = device_random((size_t)T * C, -1.0f, 1.0f);
    float* d_dout = device_random((size_t)B * T * C, -1.0f, 1.0f);
    int* inp = make_random_int((size_t)B * T, Vp);
    int* d_inp = to_device(inp, (size_t)B * T);
    EncoderBuckets bk = buckets_alloc(B * T, Vp);
    // dout read once, touched dwte rows and dwpe read and written
    double bytes = (3.0 * B * T * C + 2.0 * T * C) * sizeof(float);
    printf("benchmark B=%d T=%d C=%d (floor: %.1f MB moved; version 2 includes its host sort and copies)\n",
           B, T, C, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(20, [&]() {
                encoder_backward(v, d_dwte, d_dwpe, d_dout, d_inp, inp, &bk, B, T, C, Vp, block_size);
            });
            char what[64];
            snprintf(what, sizeof(what), "encoder_backward v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    buckets_free(&bk);
    cudaCheck(cudaFree(d_dwte)); cudaCheck(cudaFree(d_dwpe)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp));
    free(inp);
    return 0;
}
