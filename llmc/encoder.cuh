// llmc/encoder.cuh: the token + position embedding, forward and backward.
// defines: encoder_forward_kernel1, encoder_forward_kernel2, encoder_forward, wpe_backward_kernel,
//          wte_backward_kernel, EncoderBuckets, encoder_buckets, encoder_backward
//
// encoder_forward: out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; dev/cuda/encoder_forward.cu
// version 2 (float4) where C % 4 == 0, else version 1. encoder_backward ACCUMULATES (+=) into
// dwte and dwpe, deterministically (dev/cuda/encoder_backward.cu version 2): dwpe sums over b
// in order; for dwte the host groups the B*T positions by token (encoder_buckets, a counting
// sort) and one block per token adds its rows in position order. No atomics.
#ifndef LLMC_ENCODER_CUH
#define LLMC_ENCODER_CUH

#include "cuda_common.cuh"

__global__ void encoder_forward_kernel1(float* out, const int* inp, const float* wte, const float* wpe,
                                        int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    size_t bt = idx / C;
    int c = (int)(idx % C);
    int t = (int)(bt % T);
    out[idx] = wte[(size_t)inp[bt] * C + c] + wpe[(size_t)t * C + c];
}

__global__ void encoder_forward_kernel2(float4* out, const int* inp, const float4* wte, const float4* wpe,
                                        int B, int T, int C) {
    int C4 = C / 4;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C4) return;
    size_t bt = idx / C4;
    int c4 = (int)(idx % C4);
    int t = (int)(bt % T);
    float4 we = wte[(size_t)inp[bt] * C4 + c4];
    float4 pe = wpe[(size_t)t * C4 + c4];
    out[idx] = make_float4(we.x + pe.x, we.y + pe.y, we.z + pe.z, we.w + pe.w);
}

static void encoder_forward(float* out,                          // (B, T, C)
                            const int* inp,                      // (B, T) device
                            const float* wte, const float* wpe,  // (Vp, C), (maxT, C)
                            int B, int T, int C) {
    const int block = 256;
    if (C % 4 == 0) {
        encoder_forward_kernel2<<<ceil_div((size_t)B * T * C / 4, block), block>>>(
            (float4*)out, inp, (const float4*)wte, (const float4*)wpe, B, T, C);
    } else {
        encoder_forward_kernel1<<<ceil_div((size_t)B * T * C, block), block>>>(out, inp, wte, wpe, B, T, C);
    }
    launchCheck();
}

// dwpe[t,c] += sum_b dout[b,t,c], b in order
__global__ void wpe_backward_kernel(float* dwpe, const float* dout, int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)T * C) return;
    float sum = 0.0f;
    for (int b = 0; b < B; b++) sum += dout[(size_t)b * T * C + idx];
    dwpe[idx] += sum;
}

// dwte[token u,c] += the rows of dout at bucket u's positions, in position order
__global__ void wte_backward_kernel(float* dwte, const float* dout, const int* bucket_token,
                                    const int* bucket_start, const int* bucket_pos, int C) {
    int u = blockIdx.x;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sum = 0.0f;
    for (int i = bucket_start[u]; i < bucket_start[u + 1]; i++) sum += dout[(size_t)bucket_pos[i] * C + c];
    dwte[(size_t)bucket_token[u] * C + c] += sum;
}

typedef struct {
    int *token, *start, *pos, *count;  // host: (BT), (BT+1), (BT), (Vp) zeroed
    int *d_token, *d_start, *d_pos;    // device copies
} EncoderBuckets;

// Groups the B*T positions by token id (counting sort); returns the number of buckets.
static int encoder_buckets(EncoderBuckets* bk, const int* inp, int BT, int Vp) {
    for (int i = 0; i < BT; i++) bk->count[inp[i]]++;
    int num = 0, offset = 0;
    for (int v = 0; v < Vp; v++) {
        if (bk->count[v] == 0) continue;
        bk->token[num] = v;
        bk->start[num] = offset;
        offset += bk->count[v];
        bk->count[v] = bk->start[num];  // next write slot for token v
        num++;
    }
    bk->start[num] = offset;
    for (int i = 0; i < BT; i++) bk->pos[bk->count[inp[i]]++] = i;
    for (int u = 0; u < num; u++) bk->count[bk->token[u]] = 0;
    return num;
}

// block: threads per block (the trainer's 256; the workbench sweeps it)
static void encoder_backward(float* dwte, float* dwpe,  // (Vp, C), (maxT, C)
                             const float* dout,         // (B, T, C)
                             const int* inp_host,       // (B, T) host
                             EncoderBuckets* bk, int B, int T, int C, int Vp, int block = 256) {
    wpe_backward_kernel<<<ceil_div((size_t)T * C, block), block>>>(dwpe, dout, B, T, C);
    launchCheck();
    int num = encoder_buckets(bk, inp_host, B * T, Vp);
    cudaCheck(cudaMemcpy(bk->d_token, bk->token, (size_t)num * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(bk->d_start, bk->start, ((size_t)num + 1) * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(bk->d_pos, bk->pos, (size_t)B * T * sizeof(int), cudaMemcpyHostToDevice));
    dim3 grid(num, ceil_div(C, block));
    wte_backward_kernel<<<grid, block>>>(dwte, dout, bk->d_token, bk->d_start, bk->d_pos, C);
    launchCheck();
}

#endif  // LLMC_ENCODER_CUH
