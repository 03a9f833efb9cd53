// Workbench: AdamW update, the same arithmetic as train_gpt2.c's gpt2_adamw_update:
//   g = grad * grad_scale                       (grad_scale < 1 when clipping)
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p * (1 - lr wd) - step_size * m / (sqrt(v) / b2s + eps)
//   or, decaying toward the initial values (--decay-toward-init, init != NULL),
//   p = (p - lr wd (p - init)) - step_size * m / (sqrt(v) / b2s + eps),
//   with step_size = lr / (1 - beta1^t) and b2s = sqrt(1 - beta2^t) computed on the host
//   in double, as the CPU trainer does. params, grads, m, v (n), updated in place
//   (grads only read).
// Versions:
//   1: one thread per parameter, both weight decays. Shipped: llmc/adamw.cuh's adamw_kernel1,
//      which the trainer launches once per tensor (block 512): its tensors start at any
//      float offset, so float4 would not fit all of them.
//   2: one thread per 4 parameters, float4 loads and stores (pointers 16-byte aligned,
//      n % 4 == 0); plain weight decay only. Not used by the trainer.
// Memory-bound: floor is 4 reads and 3 writes per parameter, 28 bytes.
// Build: make cuda-workbenches; run: dev/cuda/bin/adamw [version] [--check-only]
#include "common.h"
#include "../../llmc/adamw.cuh"

typedef struct {
    float beta1, beta2, eps;
    float decay;      // 1 - lr * wd
    float lr_wd;      // lr * wd
    float step_size;  // lr / (1 - beta1^t)
    float b2s;        // sqrt(1 - beta2^t)
    float grad_scale;
} AdamWArgs;

static AdamWArgs adamw_args(float lr, float wd, float beta1, float beta2, float eps, int t, float grad_scale) {
    AdamWArgs a;
    a.beta1 = beta1; a.beta2 = beta2; a.eps = eps;
    a.decay = 1.0f - lr * wd;
    a.lr_wd = lr * wd;
    a.step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)t)));
    a.b2s = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    a.grad_scale = grad_scale;
    return a;
}

// init != NULL: decay toward init
static void adamw_cpu(float* p, float* m, float* v, const float* g, const float* init, size_t n, AdamWArgs a) {
    for (size_t j = 0; j < n; j++) {
        float grad = g[j] * a.grad_scale;
        float mj = a.beta1 * m[j] + (1.0f - a.beta1) * grad;
        float vj = a.beta2 * v[j] + (1.0f - a.beta2) * grad * grad;
        m[j] = mj;
        v[j] = vj;
        float pj = init != NULL ? p[j] - a.lr_wd * (p[j] - init[j]) : p[j] * a.decay;
        p[j] = pj - a.step_size * (mj / (sqrtf(vj) / a.b2s + a.eps));
    }
}

__device__ __forceinline__ void adamw_one(float& p, float& m, float& v, float g, const AdamWArgs& a) {
    float grad = g * a.grad_scale;
    float mj = a.beta1 * m + (1.0f - a.beta1) * grad;
    float vj = a.beta2 * v + (1.0f - a.beta2) * grad * grad;
    m = mj;
    v = vj;
    p = p * a.decay - a.step_size * (mj / (sqrtf(vj) / a.b2s + a.eps));
}

// version 1: adamw_kernel1 of llmc/adamw.cuh

// version 2: thread per float4
__global__ void adamw_kernel2(float4* params, float4* m, float4* v, const float4* grads, size_t n4, AdamWArgs a) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 p = params[i], mm = m[i], vv = v[i], g = grads[i];
    adamw_one(p.x, mm.x, vv.x, g.x, a);
    adamw_one(p.y, mm.y, vv.y, g.y, a);
    adamw_one(p.z, mm.z, vv.z, g.z, a);
    adamw_one(p.w, mm.w, vv.w, g.w, a);
    params[i] = p; m[i] = mm; v[i] = vv;
}

static void adamw(int version, float* p, float* m, float* v, const float* g, const float* init, size_t n, AdamWArgs a,
                  int block_size) {
    if (version == 1) {
        adamw_kernel1<<<ceil_div(n, block_size), block_size>>>(p, m, v, g, init, n, a.beta1, a.beta2, a.eps, a.decay,
                                                               a.lr_wd, a.step_size, a.b2s, a.grad_scale);
    } else {
        adamw_kernel2<<<ceil_div(n / 4, block_size), block_size>>>((float4*)p, (float4*)m, (float4*)v,
                                                                   (const float4*)g, n / 4, a);
    }
    launchCheck();
}

// toward_init: weight decay toward a random init tensor (version 1 only)
static void check_shape(int version, size_t n, int toward_init) {
    if (version == 2 && (n % 4 != 0 || toward_init)) return;
    float* p0 = make_random_float(n, -1.0f, 1.0f);
    float* g = make_random_float(n, -0.1f, 0.1f);
    float* m0 = make_random_float(n, -0.01f, 0.01f);
    float* v0 = make_random_float(n, 0.0f, 1e-4f);
    float *d_p = device_alloc<float>(n), *d_m = device_alloc<float>(n), *d_v = device_alloc<float>(n);
    float* d_g = to_device(g, n);
    float* init = toward_init ? make_random_float(n, -1.0f, 1.0f) : NULL;
    float* d_init = toward_init ? to_device(init, n) : NULL;
    std::vector<float> p(n), m(n), v(n);
    printf("version %d, n=%zu%s\n", version, n, toward_init ? ", decay toward init" : "");
    int t = 1;
    for (int block_size : {32, 64, 128, 256, 512, 1024}) {
        // three steps in a row, with weight decay, clipping and the bias corrections of steps t..t+2
        memcpy(p.data(), p0, n * sizeof(float)); memcpy(m.data(), m0, n * sizeof(float)); memcpy(v.data(), v0, n * sizeof(float));
        cudaCheck(cudaMemcpy(d_p, p0, n * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_m, m0, n * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(d_v, v0, n * sizeof(float), cudaMemcpyHostToDevice));
        for (int s = 0; s < 3; s++) {
            AdamWArgs a = adamw_args(1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, t + s, s == 1 ? 0.5f : 1.0f);
            adamw_cpu(p.data(), m.data(), v.data(), g, init, n, a);
            adamw(version, d_p, d_m, d_v, d_g, d_init, n, a, block_size);
        }
        // the same float operations in the same order; FMA contraction may differ by an ulp
        validate_result(d_p, p.data(), "params", n, 1e-7f, 1e-6f);
        validate_result(d_m, m.data(), "m", n, 1e-9f, 1e-6f);
        validate_result(d_v, v.data(), "v", n, 1e-12f, 1e-6f);
        t += 3;
    }
    cudaCheck(cudaFree(d_p)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_g));
    if (toward_init) { cudaCheck(cudaFree(d_init)); free(init); }
    free(p0); free(g); free(m0); free(v0);
}

int main(int argc, char** argv) {
    const int num_versions = 2;
    BenchArgs args = parse_bench_args(argc, argv, num_versions);
    require_gpu();
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int toward_init = 0; toward_init <= 1; toward_init++) {
            check_shape(v, (size_t)1 << 20, toward_init);
            check_shape(v, 1001, toward_init);
            check_shape(v, 4 * 37, toward_init);
        }
    }
    printf("all checks passed\n");
    if (args.check_only) return 0;

    size_t n = 124475904;  // GPT-2 124M with Vp = 50304
    float* d_p = device_random(n, -1.0f, 1.0f);
    float* d_m = device_random(n, -0.01f, 0.01f);
    float* d_v = device_random(n, 0.0f, 1e-4f);
    float* d_g = device_random(n, -0.1f, 0.1f);
    double bytes = 28.0 * n;
    printf("benchmark n=%zu (GPT-2 124M; floor: %.1f MB moved)\n", n, bytes / 1e6);
    AdamWArgs a = adamw_args(1e-4f, 0.0f, 0.9f, 0.999f, 1e-8f, 10, 1.0f);
    for (int v = 1; v <= num_versions; v++) {
        if (args.version != 0 && args.version != v) continue;
        for (int block_size : {128, 256, 512, 1024}) {
            float ms = benchmark_kernel(20, [&]() { adamw(v, d_p, d_m, d_v, d_g, NULL, n, a, block_size); });
            char what[64];
            snprintf(what, sizeof(what), "adamw v%d", v);
            report_time(what, block_size, ms, bytes, 0);
        }
    }
    cudaCheck(cudaFree(d_p)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_g));
    return 0;
}
