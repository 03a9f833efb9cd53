// Workbench: fused classifier: softmax, cross-entropy loss and its gradient in one
// kernel, the gradient written over the logits (the logits buffer becomes dlogits).
//   logits (N, Vp) with N = B*T rows; columns V..Vp-1 are padding and take no part.
//   targets (N) int in [0, V); dloss (N) = d(mean loss)/d(loss of row r), as the
//   host computes it (train_gpt2.c's dloss vector): 1/(rows that count) for a row
//   that counts in the loss, 0 for a row the loss mask leaves out.
//   losses[r] = logsumexp(logits[r, :V]) - logits[r, target[r]]   (every row)
//   preds[r]  = argmax over the first V columns (the first on ties), nullptr to skip
//   if write_dlogits: logits[r, v] <- (softmax[r, v] - [v == target]) * dloss[r]
//                     for v < V, and 0 for the padding columns.
// Version 2 ships: llmc/classifier.cuh (included below), in the trainer's classifier pass.
// Versions:
//   1: block per row, three passes (max, sum of exp, write), scalar loads.
//   2: block per row, one pass with a running max and sum per thread (online softmax)
//      then the write pass; float4 loads and stores (Vp % 4 == 0).
// Memory-bound: floor is reading the logits once and writing them once, 2*N*Vp floats
// (version 2 reads twice: 3*N*Vp; the second read often hits L2 at 200 KB per row).
// Build: make cuda-workbenches; run: dev/cuda/bin/fused_classifier [version] [--check-only]
#include "common.h"
#include "../../llmc/classifier.cuh"

// ----------------------------------------------------------------------------
// CPU reference (double)

static void classifier_cpu(float* dlogits, float* losses, int* preds, const float* logits, const int* targets,
                           const float* dloss, int N, int V, int Vp) {
    for (int r = 0; r < N; r++) {
        const float* x = logits + (size_t)r * Vp;
        double mx = -INFINITY;
        int arg = 0;
        for (int v = 0; v < V; v++) if (x[v] > mx) { mx = x[v]; arg = v; }
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp(x[v] - mx);
        double lse = mx + log(sum);
        losses[r] = (float)(lse - x[targets[r]]);
        preds[r] = arg;
        float* g = dlogits + (size_t)r * Vp;
        for (int v = 0; v < Vp; v++) {
            double p = v < V ? exp(x[v] - lse) : 0.0;
            double ind = (v == targets[r]) ? 1.0 : 0.0;
            g[v] = (v < V) ? (float)((p - ind) * dloss[r]) : 0.0f;
        }
    }
}

// ----------------------------------------------------------------------------
// block-wide reductions (blockDim.x a multiple of 32, at most 1024)

// SoftmaxStat, stat_combine, block_stat_reduce (version 2): llmc/classifier.cuh

__device__ float block_max(float v) {
    __shared__ float buf[32];
    __shared__ float result;
    v = warp_max(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float x = (lane < (int)(blockDim.x / 32)) ? buf[lane] : -FLT_MAX;
        x = warp_max(x);
        if (lane == 0) result = x;
    }
    __syncthreads();
    return result;
}

__device__ float block_sum(float v) {
    __shared__ float buf[32];
    __shared__ float result;
    v = warp_sum(v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float x = (lane < (int)(blockDim.x / 32)) ? buf[lane] : 0.0f;
        x = warp_sum(x);
        if (lane == 0) result = x;
    }
    __syncthreads();
    return result;
}

// ----------------------------------------------------------------------------
// kernels: grid N (one block per row)

// version 1: three passes
__global__ void classifier_kernel1(float* logits, float* losses, int* preds, const int* targets, const float* dloss,
                                   int V, int Vp, int write_dlogits) {
    int r = blockIdx.x;
    float* x = logits + (size_t)r * Vp;
    float mx = -FLT_MAX;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) sum += expf(x[v] - mx);
    sum = block_sum(sum);
    const float lse = mx + logf(sum);
    const float dl = dloss[r];
    const int target = targets[r];
    if (preds && threadIdx.x == 0) {
        int arg = 0;  // one thread, in order: simple and exact
        for (int v = 0; v < V; v++) if (x[v] == mx) { arg = v; break; }
        preds[r] = arg;
    }
    __syncthreads();  // preds read x before anyone overwrites it
    for (int v = threadIdx.x; v < Vp; v += blockDim.x) {
        float xv = x[v];
        if (v == target) losses[r] = lse - xv;
        if (write_dlogits) {
            float g = 0.0f;
            if (v < V) g = (expf(xv - lse) - (v == target ? 1.0f : 0.0f)) * dl;
            x[v] = g;
        }
    }
}

// version 2: classifier_kernel2 of llmc/classifier.cuh (the trainer launches it with 1024 threads)

static void fused_classifier(int version, float* logits, float* losses, int* preds, const int* targets,
                             const float* dloss, int N, int V, int Vp, int write_dlogits, int block_size) {
    if (version == 1) classifier_kernel1<<<N, block_size>>>(logits, losses, preds, targets, dloss, V, Vp, write_dlogits);
    else classifier_kernel2<<<N, block_size>>>(logits, losses, preds, targets, dloss, V, Vp, write_dlogits);
    launchCheck();
}

// ----------------------------------------------------------------------------

static void check_shape(int version, int N, int V, int use_mask) {
    int Vp = (V + 127) / 128 * 128;
    float* logits = make_random_float((size_t)N * Vp, -4.0f, 4.0f);
    for (size_t i = 0; i < (size_t)N * Vp; i++) if ((int)(i % Vp) >= V) logits[i] = 0.0f;  // padding is zero
    if (N > 1) { logits[(size_t)1 * Vp + 3] = 30.0f; logits[(size_t)1 * Vp + 7] = 30.0f; }  // a tie for argmax
    int* targets = make_random_int(N, V);
    // dloss as the trainers compute it: 1/(rows that count) where the mask is 1, else 0
    std::vector<int> mask(N);
    int counted = 0;
    for (int r = 0; r < N; r++) { mask[r] = use_mask ? (int)(rand_u32() % 3 != 0) : 1; counted += mask[r]; }
    float* dloss = (float*)malloc(N * sizeof(float));
    for (int r = 0; r < N; r++) dloss[r] = mask[r] && counted > 0 ? 1.0f / (float)counted : 0.0f;
    float* ref_g = (float*)malloc((size_t)N * Vp * sizeof(float));
    float* ref_l = (float*)malloc(N * sizeof(float));
    int* ref_p = (int*)malloc(N * sizeof(int));
    classifier_cpu(ref_g, ref_l, ref_p, logits, targets, dloss, N, V, Vp);
    float* ref_pf = (float*)malloc(N * sizeof(float));
    for (int r = 0; r < N; r++) ref_pf[r] = (float)ref_p[r];

    float* d_logits = device_alloc<float>((size_t)N * Vp);
    float* d_losses = device_alloc<float>(N);
    int* d_preds = device_alloc<int>(N);
    int* d_targets = to_device(targets, N);
    float* d_dloss = to_device(dloss, N);
    float* d_predsf = device_alloc<float>(N);
    std::vector<int> hp(N);
    printf("version %d, N=%d V=%d Vp=%d mask=%d\n", version, N, V, Vp, use_mask);
    for (int block_size : {32, 128, 512, 1024}) {
        cudaCheck(cudaMemcpy(d_logits, logits, (size_t)N * Vp * sizeof(float), cudaMemcpyHostToDevice));
        poison(d_losses, N);
        fused_classifier(version, d_logits, d_losses, d_preds, d_targets, d_dloss, N, V, Vp, 1, block_size);
        // probabilities are <= 1 and scaled by dloss <= 1/counted; losses are O(log V)
        validate_result(d_logits, ref_g, "dlogits", (size_t)N * Vp, 1e-6f / (counted > 0 ? counted : 1), 1e-4f);
        validate_result(d_losses, ref_l, "losses", N, 1e-5f, 1e-5f);
        cudaCheck(cudaMemcpy(hp.data(), d_preds, N * sizeof(int), cudaMemcpyDeviceToHost));
        std::vector<float> hpf(hp.begin(), hp.end());
        cudaCheck(cudaMemcpy(d_predsf, hpf.data(), N * sizeof(float), cudaMemcpyHostToDevice));
        validate_result(d_predsf, ref_pf, "preds", N, 0.0f, 0.0f);
        // write_dlogits = 0 leaves the logits untouched
        cudaCheck(cudaMemcpy(d_logits, logits, (size_t)N * Vp * sizeof(float), cudaMemcpyHostToDevice));
        fused_classifier(version, d_logits, d_losses, nullptr, d_targets, d_dloss, N, V, Vp, 0, block_size);
        validate_result(d_logits, logits, "logits", (size_t)N * Vp, 0.0f, 0.0f);
        validate_result(d_losses, ref_l, "losses", N, 1e-5f, 1e-5f);
    }
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_preds));
    cudaCheck(cudaFree(d_targets)); cudaCheck(cudaFree(d_dloss)); cudaCheck(cudaFree(d_predsf));
    free(logits); free(targets); free(dloss); free(ref_g); free(ref_l); free(ref_p); free(ref_pf);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        check_shape(v, 64, 50257, 0);
        check_shape(v, 33, 101, 1);   // the modular-arithmetic vocabulary, with a loss mask
        check_shape(v, 7, 128, 1);    // V == Vp: no padding
        check_shape(v, 5, 3, 0);      // fewer columns than threads
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    int N = 16 * 1024, V = 50257, Vp = 50304;
    float* d_logits = device_random((size_t)N * Vp, -4.0f, 4.0f);
    float* d_losses = device_alloc<float>(N);
    int* d_preds = device_alloc<int>(N);
    int* targets = make_random_int(N, V);
    int* d_targets = to_device(targets, N);
    std::vector<float> dloss(N, 1.0f / N);
    float* d_dloss = to_device(dloss.data(), N);
    double bytes = 2.0 * N * Vp * sizeof(float);
    printf("benchmark N=%d (B=16 T=1024) V=%d Vp=%d (floor: %.1f MB moved)\n", N, V, Vp, bytes / 1e6);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {256, 512, 1024}) {
            // the kernel overwrites its input: timing repeats it on dlogits, which is the same work
            float ms = benchmark_kernel(10, [&]() {
                fused_classifier(v, d_logits, d_losses, d_preds, d_targets, d_dloss, N, V, Vp, 1, block_size);
            });
            char what[64];
            snprintf(what, sizeof(what), "fused_classifier v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_logits)); cudaCheck(cudaFree(d_losses)); cudaCheck(cudaFree(d_preds)); cudaCheck(cudaFree(d_targets));
    cudaCheck(cudaFree(d_dloss));
    free(targets);
    return 0;
}
