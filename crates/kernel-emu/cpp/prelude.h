// Included first by every wrapper: the emulator and the CUDA headers the kernels include, so
// that a kernel file wrapped in a namespace below does not pull them into that namespace
// (their include guards make the kernel's own #include lines no-ops).
#pragma once
#include "cuda_emu.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "mma.h"
using bf16 = __nv_bfloat16;
// One block per row of 256 threads, as crates/kernels/src/cuda/mod.rs `rows_cfg`.
inline dim3 rows_grid(int rows) { return dim3((unsigned)rows); }
constexpr unsigned kBlock = 256;
// Grid-stride elementwise launch, as `elementwise_cfg`: ceil(n / 256) blocks, 1..=65536.
inline dim3 elementwise_grid(size_t n) {
  size_t b = (n + kBlock - 1) / kBlock;
  b = b < 1 ? 1 : (b > 65536 ? 65536 : b);
  return dim3((unsigned)b);
}
// A scratch buffer as the launchers' `alloc_scratch` leaves it (uninitialised), filled with NaN
// here: a partial result that a kernel reads before any kernel wrote it poisons the output.
inline float* scratch(size_t n) {
  float* p = new float[n];
  std::fill_n(p, n, NAN);
  return p;
}
