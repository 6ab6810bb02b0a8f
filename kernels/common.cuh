// Shared helpers for Lantern's kernels: dtype conversion and deterministic block reductions.
//
// Every kernel reads and writes its storage dtype T (float or __nv_bfloat16) and computes in
// float. Reductions use a fixed assignment of elements to threads and a fixed shuffle tree, so
// a result depends only on the shape and the launch configuration, never on timing: two runs
// give the same bits, which exact resume on a GPU relies on.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of `v` over the block, returned to every thread. blockDim.x must be a multiple of 32
// (at most 1024) and every thread of the block must call it. The leading barrier makes it safe
// to call several times in a row: the previous call's readers of `s` are done before it is
// overwritten.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = warp_sum(threadIdx.x < warps ? s[threadIdx.x] : 0.f);
  if (threadIdx.x == 0) s[0] = v;
  __syncthreads();
  return s[0];
}

// Maximum of `v` over the block; same rules as block_sum.
__device__ __forceinline__ float block_max(float v) {
  __shared__ float s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = warp_max(threadIdx.x < warps ? s[threadIdx.x] : -INFINITY);
  if (threadIdx.x == 0) s[0] = v;
  __syncthreads();
  return s[0];
}
