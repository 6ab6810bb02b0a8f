// A CPU emulation of the subset of CUDA C++ that Lantern's kernels use, so that the kernel
// sources in kernels/*.cu run unchanged inside `cargo test` on a machine without a GPU.
//
// Model: one launch at a time (a global lock); the blocks of a grid run one after another;
// the threads of a block are cooperative fibers on the calling OS thread, switched only at
// barriers (__syncthreads, __syncwarp, warp shuffles, warp-wide WMMA stores). A barrier
// releases when every thread of its scope that has not returned has reached it; a state in
// which no fiber can run (threads of a warp split between a shuffle and __syncthreads, or a
// __syncthreads inside divergent code) aborts with the block and the threads named. Each warp
// runs as far as it can alone (through its warp barriers, up to a __syncthreads) before the
// next warp starts. Blocks, warps and a warp's threads run in index order, or all in reverse
// (`emu_set_order`, per calling thread): results are deterministic for each order, and a race
// between two threads (no barrier between a write and another thread's access) runs one way
// round in one order and the other way in the other, so testing in both shows it.
//
// Per-thread state: threadIdx/blockIdx are globals the scheduler sets on each switch.
// `__shared__` becomes `static`: one instance per kernel, valid because blocks run in turn
// and kernels never rely on shared memory's initial contents.
// Floating point follows IEEE like the GPU's `_rn` intrinsics; build with
// -ffp-contract=off so that only explicit fmaf/__fmaf_rn fuse (nvcc's default contraction of
// a*b+c is a rounding difference the tests' tolerances cover).
#pragma once
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static constexpr int warpSize = 32;

namespace emu {
// Scheduler entry points (runtime.cpp).
void syncthreads();
void syncwarp();
// Exchange `bytes` bytes of this lane's value with lane `src` of the same warp (its own value
// when `src` is out of range): two warp barriers around a write and a read of a slot array.
void shfl(const void* mine, void* out, int src_lane, size_t bytes);
int lane();
// Runs `body` once per thread of every block of `grid`, as described at the top.
void run(dim3 grid, dim3 block, const std::function<void()>& body);

// Launch a kernel function with its arguments converted to the parameter types.
template <typename... P, typename... A>
void launch(dim3 grid, dim3 block, void (*kernel)(P...), A&&... args) {
  std::tuple<std::decay_t<P>...> a{static_cast<std::decay_t<P>>(args)...};
  run(grid, block, [&]() { std::apply(kernel, a); });
}
}  // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) {
    fprintf(stderr, "cuda emulator: only full-warp __syncwarp is supported\n");
    abort();
  }
  emu::syncwarp();
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src) {
  if (mask != 0xffffffffu) {
    fprintf(stderr, "cuda emulator: only full-warp shuffles are supported\n");
    abort();
  }
  T out;
  emu::shfl(&v, &out, src & 31, sizeof(T));
  return out;
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  return __shfl_sync(mask, v, emu::lane() ^ lane_mask);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned d) {
  const int src = emu::lane() + (int)d;
  return __shfl_sync(mask, v, src < 32 ? src : emu::lane());
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned d) {
  const int src = emu::lane() - (int)d;
  return __shfl_sync(mask, v, src >= 0 ? src : emu::lane());
}

// Atomics: fibers switch only at barriers, so a plain read-modify-write is atomic here.
template <typename T>
T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  T old = *p;
  *p = v > old ? v : old;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  T old = *p;
  *p = v;
  return old;
}
template <typename T>
T atomicCAS(T* p, T cmp, T v) {
  T old = *p;
  if (old == cmp) *p = v;
  return old;
}

// Device min/max overloads CUDA provides at global scope.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// Correctly rounded single-precision intrinsics (IEEE round-to-nearest-even, as on the GPU).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frcp_rn(float a) { return 1.f / a; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
// Fast-math forms: the emulator computes them exactly; their GPU error is within the tests'
// tolerances.
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline float rsqrtf(float a) { return 1.f / sqrtf(a); }
inline double rsqrt(double a) { return 1.0 / sqrt(a); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
