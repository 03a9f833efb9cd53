// dev/cuda/attention_cpu.h: the CPU reference of causal multi-head self-attention's forward pass,
// in double, for the attention workbenches (attention_forward.cu checks against it, and
// attention_backward.cu makes its out and lse with it).
//   qkv (B,T,3C) per token [q | k | v], head h at [h*HS, (h+1)*HS); out (B,T,C); lse (B,NH,T)
#pragma once

#include <math.h>
#include <stddef.h>

#include <vector>

static void attention_forward_cpu(float* out, float* lse, const float* qkv, int B, int T, int NH, int HS) {
    int C = NH * HS;
    double scale = 1.0 / sqrt((double)HS);
    std::vector<double> w(T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * HS;
                double mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * HS;
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++) dot += (double)q[d] * k[d];
                    w[s] = dot * scale;
                    mx = fmax(mx, w[s]);
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { w[s] = exp(w[s] - mx); sum += w[s]; }
                float* o = out + ((size_t)b * T + t) * C + h * HS;
                for (int d = 0; d < HS; d++) {
                    double acc = 0.0;
                    for (int s = 0; s <= t; s++) acc += w[s] * qkv[((size_t)b * T + s) * 3 * C + 2 * C + h * HS + d];
                    o[d] = (float)(acc / sum);
                }
                lse[((size_t)b * NH + h) * T + t] = (float)(mx + log(sum));
            }
        }
    }
}
