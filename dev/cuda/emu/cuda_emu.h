// dev/cuda/emu/cuda_emu.h: a CPU emulator for the CUDA subset this project uses,
// so kernels, workbenches and the CUDA trainer can be run and checked on a machine
// with no GPU. It is a test tool, not a second backend: results match the GPU's up
// to float rounding (host libm vs device intrinsics, FMA contraction), and it is
// slow (each CUDA thread is a fiber).
//
// How it is used: dev/cuda/emu/translate.py rewrites `kernel<<<grid, block, shmem>>>(args)`
// into `::emu::Launch(grid, block, shmem).with(kernel)(args)` and `extern __shared__ T x[];`
// into a pointer to the launch's dynamic shared memory; the result is compiled by g++
// with this header force-included (-include) and dev/cuda/emu/include on the include
// path (its cuda_runtime.h and cublas_v2.h point here). See `make cuda-emu`.
//
// What is emulated, and how:
//   * blocks run one after another; the threads of a block are ucontext fibers that
//     run until they finish or block in __syncthreads / a warp shuffle / __syncwarp.
//     __shared__ is `static`: one copy shared by the running block's threads.
//   * __syncthreads releases when every thread of the block has reached it; a thread
//     that returned while others wait is reported as an error (undefined in CUDA).
//   * shuffles need all 32 lanes of the warp (full mask only); a shuffle with a lane
//     missing (returned, or waiting elsewhere) is reported as an error.
//   * dynamic shared memory is filled with NaN bytes at each block start, so a read
//     of shared memory nothing wrote shows up; launches check the block and grid
//     limits and the 48 KB dynamic shared memory default (cudaFuncSetAttribute raises it).
//   * device memory is host memory (posix_memalign of the exact size, so AddressSanitizer
//     catches out-of-bounds accesses); copies are memcpy; everything is synchronous.
//   * cuBLAS: cublasSgemm and cublasSgemmStridedBatched in plain loops (column-major,
//     double accumulation), with cuBLAS's argument checks (ld >= rows) and its rule
//     that C is not read when beta == 0.
// Any misuse aborts with a message naming the kernel launch and the thread.
#pragma once
#ifndef CUDA_EMU_H
#define CUDA_EMU_H
#define CUDA_EMU 1

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <type_traits>
#include <map>
#include <vector>

// ----------------------------------------------------------------------------
// keywords and types

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __constant__
#define __shared__ static
#define __align__(n) alignas(n)
#define __launch_bounds__(...)
#define __grid_constant__

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) int4 { int x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static const int warpSize = 32;

// device math that the host lacks
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// __expf and __logf: glibc declares both, with the same meaning
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
template <class T> static inline T __ldg(const T* p) { return *p; }
// CUDA's device min/max overloads
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline size_t min(size_t a, size_t b) { return a < b ? a : b; }
static inline size_t max(size_t a, size_t b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

// ----------------------------------------------------------------------------
// the fiber scheduler

// Switching fibers: on x86-64 a few instructions that save the callee-saved
// registers and swap stacks (swapcontext makes a system call per switch, which
// made the emulator ten times slower); elsewhere ucontext.
#if defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_FAST_SWITCH 1
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
__asm__(
    ".text\n"
    ".weak emu_ctx_switch\n"
    ".type emu_ctx_switch,@function\n"
    "emu_ctx_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_ctx_switch, .-emu_ctx_switch\n");
#else
#define EMU_FAST_SWITCH 0
#endif

namespace emu {

enum FiberState { RUNNABLE, AT_SHFL, AT_SYNC, AT_SYNCWARP, DONE };
enum ShflKind { SHFL_IDX, SHFL_XOR, SHFL_DOWN, SHFL_UP };

struct Fiber {
#if EMU_FAST_SWITCH
    void* sp;
#else
    ucontext_t ctx;
#endif
    FiberState state;
    uint3 tid;
    int linear;
    ShflKind kind;
    int arg;
    uint64_t val, out;
};

struct Block {
    std::vector<Fiber> fibers;
    std::vector<char*> stacks;
#if EMU_FAST_SWITCH
    void* sched_sp;
#else
    ucontext_t sched;
#endif
    Fiber* cur = nullptr;
    const std::function<void()>* body = nullptr;
    std::vector<unsigned char> dyn_shared;
    const char* kernel_name = "";
};
inline Block g_block;
inline uint3 g_blockIdx, g_blockDim, g_gridDim;
inline std::map<const void*, int> g_max_dyn_shared;  // from cudaFuncSetAttribute
inline long long g_launches = 0;
static const size_t STACK_BYTES = 256 * 1024;

[[noreturn]] static inline void fail(const char* what) {
    Fiber* f = g_block.cur;
    fprintf(stderr, "cuda_emu: %s\n  kernel %s, block (%u,%u,%u)", what, g_block.kernel_name,
            g_blockIdx.x, g_blockIdx.y, g_blockIdx.z);
    if (f) fprintf(stderr, ", thread (%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
    fprintf(stderr, "\n");
    abort();
}

#if EMU_FAST_SWITCH
static inline void yield_to_scheduler() { emu_ctx_switch(&g_block.cur->sp, g_block.sched_sp); }
static inline void switch_to(Fiber* f) { emu_ctx_switch(&g_block.sched_sp, f->sp); }
[[noreturn]] static void fiber_entry() {
    (*g_block.body)();
    g_block.cur->state = DONE;
    emu_ctx_switch(&g_block.cur->sp, g_block.sched_sp);  // never resumed
    __builtin_unreachable();
}
static inline void init_fiber(Fiber* f, char* stack) {
    void** sp = (void**)(stack + STACK_BYTES);  // 16-byte aligned top
    *--sp = nullptr;                // where fiber_entry's return address would be
    *--sp = (void*)&fiber_entry;    // popped by the switch's ret
    for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    f->sp = sp;
}
#else
static inline void yield_to_scheduler() { swapcontext(&g_block.cur->ctx, &g_block.sched); }
static inline void switch_to(Fiber* f) { swapcontext(&g_block.sched, &f->ctx); }
static void fiber_entry() {
    (*g_block.body)();
    g_block.cur->state = DONE;
    // returning switches to uc_link, the scheduler
}
static inline void init_fiber(Fiber* f, char* stack) {
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = stack;
    f->ctx.uc_stack.ss_size = STACK_BYTES;
    f->ctx.uc_link = &g_block.sched;
    makecontext(&f->ctx, fiber_entry, 0);
}
#endif

// 256-byte aligned, like the GPU's (WMMA needs 32, float4 16)
static inline void* dynamic_shared() { return (void*)(((uintptr_t)g_block.dyn_shared.data() + 255) & ~(uintptr_t)255); }

// resolves the shuffles of warps whose lanes all wait in one; returns whether any did
static bool resolve_warps(int n) {
    bool any = false;
    for (int w0 = 0; w0 < n; w0 += 32) {
        int lanes = std::min(32, n - w0);
        int at_shfl = 0, at_syncwarp = 0;
        for (int l = 0; l < lanes; l++) {
            FiberState s = g_block.fibers[w0 + l].state;
            at_shfl += (s == AT_SHFL);
            at_syncwarp += (s == AT_SYNCWARP);
        }
        if (at_shfl == 0 && at_syncwarp == 0) continue;
        if (at_shfl + at_syncwarp != lanes || lanes != 32 || (at_shfl && at_syncwarp)) {
            // some lanes are elsewhere: they may still be runnable only if they are
            // RUNNABLE, which resolve is never called with; so this is divergence
            bool waiting_elsewhere = false;
            for (int l = 0; l < lanes; l++)
                if (g_block.fibers[w0 + l].state == RUNNABLE) waiting_elsewhere = true;
            if (waiting_elsewhere) continue;
            g_block.cur = &g_block.fibers[w0];
            fail("warp shuffle or __syncwarp without all 32 lanes of the warp (a lane returned, "
                 "waits in __syncthreads, or the block size is not a multiple of 32)");
        }
        Fiber* f = &g_block.fibers[w0];
        for (int l = 0; l < 32; l++) {
            Fiber& x = f[l];
            if (x.state == AT_SHFL) {
                int src = l;
                switch (x.kind) {
                    case SHFL_IDX: src = x.arg & 31; break;
                    case SHFL_XOR: src = (l ^ x.arg) & 31; break;
                    case SHFL_DOWN: src = (l + x.arg < 32) ? l + x.arg : l; break;
                    case SHFL_UP: src = (l - x.arg >= 0) ? l - x.arg : l; break;
                }
                x.out = f[src].val;
            }
            x.state = RUNNABLE;
        }
        any = true;
    }
    return any;
}

static void run_block(int nthreads) {
    Block& b = g_block;
    if ((int)b.stacks.size() < nthreads) {
        for (int i = (int)b.stacks.size(); i < nthreads; i++) {
            void* s = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (s == MAP_FAILED) { fprintf(stderr, "cuda_emu: cannot map a fiber stack\n"); abort(); }
            b.stacks.push_back((char*)s);
        }
    }
    b.fibers.assign(nthreads, Fiber());
    for (int i = 0; i < nthreads; i++) {
        Fiber& f = b.fibers[i];
        f.state = RUNNABLE;
        f.linear = i;
        f.tid.x = i % g_blockDim.x;
        f.tid.y = (i / g_blockDim.x) % g_blockDim.y;
        f.tid.z = i / (g_blockDim.x * g_blockDim.y);
        init_fiber(&f, b.stacks[i]);
    }
    std::fill(b.dyn_shared.begin(), b.dyn_shared.end(), (unsigned char)0xFF);  // NaN bytes
    for (;;) {
        bool ran = false;
        for (int i = 0; i < nthreads; i++) {
            if (b.fibers[i].state != RUNNABLE) continue;
            b.cur = &b.fibers[i];
            switch_to(b.cur);
            ran = true;
        }
        b.cur = nullptr;
        bool resolved = resolve_warps(nthreads);
        if (ran || resolved) continue;
        int done = 0, at_sync = 0;
        for (int i = 0; i < nthreads; i++) {
            done += (b.fibers[i].state == DONE);
            at_sync += (b.fibers[i].state == AT_SYNC);
        }
        if (done == nthreads) break;
        if (at_sync == nthreads) {
            for (int i = 0; i < nthreads; i++) b.fibers[i].state = RUNNABLE;
            continue;
        }
        for (int i = 0; i < nthreads; i++)
            if (b.fibers[i].state == AT_SYNC) { b.cur = &b.fibers[i]; break; }
        fail("__syncthreads reached by only part of the block (others returned or wait in a shuffle)");
    }
}

template <class T>
static inline T shuffle(ShflKind kind, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    if (mask != 0xFFFFFFFFu) fail("shuffle with a mask other than 0xFFFFFFFF (not supported by the emulator)");
    if (width != 32) fail("shuffle with width != 32 (not supported by the emulator)");
    Fiber* f = g_block.cur;
    f->kind = kind;
    f->arg = arg;
    f->val = 0;
    memcpy(&f->val, &v, sizeof(T));
    f->state = AT_SHFL;
    yield_to_scheduler();
    T out;
    memcpy(&out, &f->out, sizeof(T));
    return out;
}

struct LaunchCfg {
    dim3 grid, block;
    size_t shmem;

    void run(const std::function<void()>& body, const void* kernel, const char* kname) const {
        char name[256];
        snprintf(name, sizeof(name), "%s (launch #%lld)", kname, g_launches++);
        g_block.kernel_name = name;
        long long threads = (long long)block.x * block.y * block.z;
        if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) fail("launch with an empty grid or block");
        if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) fail("launch with more than 1024 threads per block");
        if (grid.y > 65535 || grid.z > 65535) fail("launch with gridDim.y or gridDim.z over 65535");
        int limit = 48 * 1024;
        auto it = g_max_dyn_shared.find(kernel);
        if (it != g_max_dyn_shared.end()) limit = it->second;
        if (shmem > (size_t)limit) fail("launch asks for more dynamic shared memory than allowed (cudaFuncSetAttribute)");
        g_block.dyn_shared.assign(shmem + 256, 0xFF);
        g_block.body = &body;
        g_gridDim = uint3{grid.x, grid.y, grid.z};
        g_blockDim = uint3{block.x, block.y, block.z};
        for (unsigned z = 0; z < grid.z; z++)
            for (unsigned y = 0; y < grid.y; y++)
                for (unsigned x = 0; x < grid.x; x++) {
                    g_blockIdx = uint3{x, y, z};
                    run_block((int)threads);
                }
        g_block.body = nullptr;
    }
};

template <class... P>
struct Bound {
    LaunchCfg cfg;
    void (*kernel)(P...);
    const char* name;
    template <class... A>
    void operator()(A&&... a) const {
        void (*k)(P...) = kernel;
        std::function<void()> body = [=]() { k(((P)(a))...); };
        cfg.run(body, (const void*)kernel, name);
    }
};

struct Launch : LaunchCfg {
    Launch(dim3 g, dim3 b, size_t s = 0, void* stream = nullptr) : LaunchCfg{g, b, s} { (void)stream; }
    template <class... P>
    Bound<P...> with(void (*kernel)(P...), const char* name) const { return Bound<P...>{*this, kernel, name}; }
};

}  // namespace emu

#define threadIdx (::emu::g_block.cur->tid)
#define blockIdx (::emu::g_blockIdx)
#define blockDim (::emu::g_blockDim)
#define gridDim (::emu::g_gridDim)

static inline void __syncthreads() {
    ::emu::g_block.cur->state = ::emu::AT_SYNC;
    ::emu::yield_to_scheduler();
}
static inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) {
    if (mask != 0xFFFFFFFFu) ::emu::fail("__syncwarp with a partial mask (not supported by the emulator)");
    ::emu::g_block.cur->state = ::emu::AT_SYNCWARP;
    ::emu::yield_to_scheduler();
}
template <class T> static inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return ::emu::shuffle(::emu::SHFL_IDX, m, v, src, w); }
template <class T> static inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) { return ::emu::shuffle(::emu::SHFL_XOR, m, v, x, w); }
template <class T> static inline T __shfl_down_sync(unsigned m, T v, int d, int w = 32) { return ::emu::shuffle(::emu::SHFL_DOWN, m, v, d, w); }
template <class T> static inline T __shfl_up_sync(unsigned m, T v, int d, int w = 32) { return ::emu::shuffle(::emu::SHFL_UP, m, v, d, w); }
// fibers never run at the same time, so a plain read-modify-write is atomic
static inline float atomicAdd(float* p, float v) { float old = *p; *p = old + v; return old; }
static inline double atomicAdd(double* p, double v) { double old = *p; *p = old + v; return old; }
static inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p = old + v; return old; }


// ----------------------------------------------------------------------------
// WMMA (nvcuda::wmma), the tf32 m16n16k8 shape and float accumulators only.
// Emulated fragments hold the WHOLE tile in every lane (num_elements = rows * cols);
// code may only apply the same operation to every element (as real code must, the
// hardware's element-to-lane mapping being unspecified). Every operation is a warp
// barrier first, as the real ones are warp-collective. __float_to_tf32 rounds to
// 10 mantissa bits (nearest, ties away from zero like cvt.rna.tf32.f32).

namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
namespace precision { struct tf32 {}; }
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    float x[num_elements];
};

static inline float __float_to_tf32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0x1000u) & 0xFFFFE000u;  // round half away, keep 10 bits
    float r;
    memcpy(&r, &u, 4);
    return r;
}

template <class Use, int M, int N, int K, class T, class Layout>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const float* p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "accumulators load with a layout argument");
    __syncwarp();
    if (((uintptr_t)p) % 32 != 0) ::emu::fail("wmma::load_matrix_sync: pointer not 32-byte aligned");
    if (ldm % 4 != 0) ::emu::fail("wmma::load_matrix_sync: ldm not a multiple of 4");
    using F = fragment<Use, M, N, K, T, Layout>;
    for (int i = 0; i < F::rows; i++)
        for (int j = 0; j < F::cols; j++)
            f.x[i * F::cols + j] = std::is_same<Layout, row_major>::value ? p[(size_t)i * ldm + j] : p[i + (size_t)j * ldm];
}

template <int M, int N, int K, class T>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const float* p, unsigned ldm, layout_t l) {
    __syncwarp();
    if (((uintptr_t)p) % 32 != 0) ::emu::fail("wmma::load_matrix_sync: pointer not 32-byte aligned");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) f.x[i * N + j] = l == mem_row_major ? p[(size_t)i * ldm + j] : p[i + (size_t)j * ldm];
}

template <int M, int N, int K, class T>
static inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
    __syncwarp();
    if (((uintptr_t)p) % 32 != 0) ::emu::fail("wmma::store_matrix_sync: pointer not 32-byte aligned");
    if (ldm % 4 != 0) ::emu::fail("wmma::store_matrix_sync: ldm not a multiple of 4");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float* q = l == mem_row_major ? &p[(size_t)i * ldm + j] : &p[i + (size_t)j * ldm];
            *q = f.x[i * N + j];
        }
}

template <class Use, int M, int N, int K, class T, class Layout>
static inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
    for (int i = 0; i < fragment<Use, M, N, K, T, Layout>::num_elements; i++) f.x[i] = v;
}

template <int M, int N, int K, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                            const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                            const fragment<accumulator, M, N, K, float>& c) {
    __syncwarp();
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = c.x[i * N + j];
            for (int k = 0; k < K; k++) acc += a.x[i * K + k] * b.x[k * N + j];
            out[i * N + j] = acc;
        }
    memcpy(d.x, out, sizeof(out));
}
}  // namespace wmma
}  // namespace nvcuda

// ----------------------------------------------------------------------------
// runtime API

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
    cudaErrorNoKernelImageForDevice = 209,
} cudaError_t;
typedef enum { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault } cudaMemcpyKind;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
typedef void* cudaStream_t;
struct emu_event { struct timespec t; };
typedef emu_event* cudaEvent_t;

struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount, l2CacheSize, maxThreadsPerBlock, warpSize;
    size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin, sharedMemPerMultiprocessor;
};

static inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected";
        case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    }
    return "unknown error";
}
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }
static inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
static inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
static inline cudaError_t cudaGetDeviceCount(int* n) {
    // CUDA_EMU_NO_GPU=1 pretends there is none, to test the "no GPU" path
    const char* s = getenv("CUDA_EMU_NO_GPU");
    *n = (s && s[0] == '1') ? 0 : 1;
    return cudaSuccess;
}
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "cuda_emu (CPU emulation)");
    p->major = 8; p->minor = 0; p->multiProcessorCount = 4; p->l2CacheSize = 1 << 20;
    p->maxThreadsPerBlock = 1024; p->warpSize = 32;
    p->totalGlobalMem = (size_t)8 << 30; p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 160 * 1024; p->sharedMemPerMultiprocessor = 164 * 1024;
    return cudaSuccess;
}
static inline cudaError_t cudaDeviceGetAttribute(int* v, int, int) { *v = 0; return cudaSuccess; }
static inline cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
    *free_b = (size_t)6 << 30; *total = (size_t)8 << 30; return cudaSuccess;
}
static inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    // CUDA_EMU_MAX_ALLOC (bytes) makes larger allocations fail, to test the OOM path
    const char* s = getenv("CUDA_EMU_MAX_ALLOC");
    if (s && bytes > (size_t)strtoull(s, nullptr, 10)) { *p = nullptr; return cudaErrorMemoryAllocation; }
    *p = nullptr;
    if (posix_memalign(p, 256, bytes == 0 ? 1 : bytes) != 0) return cudaErrorMemoryAllocation;
    memset(*p, 0xFF, bytes);  // device memory starts as garbage: NaN bytes
    return cudaSuccess;
}
template <class T> static inline cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
static inline cudaError_t cudaMallocHost(void** p, size_t bytes) { *p = malloc(bytes); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
template <class T> static inline cudaError_t cudaMallocHost(T** p, size_t bytes) { return cudaMallocHost((void**)p, bytes); }
static inline cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaFreeHost(void* p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { if (n) memmove(d, s, n); return cudaSuccess; }
static inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t = 0) { return cudaMemcpy(d, s, n, k); }
static inline cudaError_t cudaMemset(void* d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
static inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t = 0) { memset(d, v, n); return cudaSuccess; }
static inline cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new emu_event(); return cudaSuccess; }
static inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0) { clock_gettime(CLOCK_MONOTONIC, &e->t); return cudaSuccess; }
static inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
static inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)((b->t.tv_sec - a->t.tv_sec) * 1e3 + (b->t.tv_nsec - a->t.tv_nsec) * 1e-6);
    return cudaSuccess;
}
template <class K>
static inline cudaError_t cudaFuncSetAttribute(K* kernel, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) ::emu::g_max_dyn_shared[(const void*)kernel] = value;
    return cudaSuccess;
}
static inline cudaError_t cudaDriverGetVersion(int* v) { *v = 13000; return cudaSuccess; }
static inline cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }

// ----------------------------------------------------------------------------
// cuBLAS subset

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
} cublasMath_t;
struct emu_cublas { cublasMath_t math; };
typedef emu_cublas* cublasHandle_t;

static inline cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = new emu_cublas{CUBLAS_DEFAULT_MATH}; return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasDestroy(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) { h->math = m; return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
static inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

// C = alpha op(A) op(B) + beta C for `batch` matrices, column-major, like cuBLAS
static inline cublasStatus_t emu_sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                       const float* alpha, const float* A, int lda, long long sA,
                                       const float* B, int ldb, long long sB, const float* beta,
                                       float* C, int ldc, long long sC, int batch) {
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k)) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldb < std::max(1, tb == CUBLAS_OP_N ? k : n)) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
    for (int p = 0; p < batch; p++) {
        const float* a = A + p * sA;
        const float* b = B + p * sB;
        float* c = C + p * sC;
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                for (int l = 0; l < k; l++) {
                    float av = (ta == CUBLAS_OP_N) ? a[i + (size_t)l * lda] : a[l + (size_t)i * lda];
                    float bv = (tb == CUBLAS_OP_N) ? b[l + (size_t)j * ldb] : b[j + (size_t)l * ldb];
                    acc += (double)av * bv;
                }
                float* out = &c[i + (size_t)j * ldc];
                double r = (double)*alpha * acc;
                if (*beta != 0.0f) r += (double)*beta * *out;
                *out = (float)r;
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda, const float* B, int ldb,
                                         const float* beta, float* C, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return emu_sgemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
static inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                                       int m, int n, int k, const float* alpha,
                                                       const float* A, int lda, long long sA,
                                                       const float* B, int ldb, long long sB, const float* beta,
                                                       float* C, int ldc, long long sC, int batch) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return emu_sgemm(ta, tb, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
}
static inline const char* cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

#endif  // CUDA_EMU_H
