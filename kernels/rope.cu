// Rotary position embedding, forward and backward (the CPU reference is
// crates/kernels/src/cpu/rope.rs; same formulas, same roundings). x: (B, T, H, D), rows of D
// elements, row r at table row t = (r / H) % T; cos_t, sin_t: the tables cos, sin (T, D), or
// (B·T, D) with a row per token (packed sequences) and T = B·T here. With
// half = D / 2, x1 = x[..half] and x2 = x[half..] (likewise c1, c2, s1, s2 of table row t):
//   forward   y1 = x1 c1 - x2 s1,     y2 = x2 c2 + x1 s2
//   backward  dx1 = dy1 c1 + dy2 s2,  dx2 = dy2 c2 - dy1 s1
// Each product and the sum are rounded separately (__fmul_rn, __fadd_rn, __fsub_rn: nvcc would
// otherwise contract them into an fma), as the CPU computes them: the results are the same
// bits as the CPU op's, in f32 and, after the one rounding to bf16, in bf16.
//
// grid (ceil(rows / 8)), block (32, 8): each warp one row, its lanes over the row's pairs
// (i, i + half), so that a warp reads 32 consecutive elements of each half. No reductions.
#include "common.cuh"

template <typename T, bool BWD>
__device__ void rotate(const T* x, const T* cos_t, const T* sin_t, T* y, int rows, int half,
                       int heads, int seq) {
  const int row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const int d = 2 * half;
  const int t = (row / heads) % seq;
  const T* xr = x + (size_t)row * d;
  T* yr = y + (size_t)row * d;
  const T* cr = cos_t + (size_t)t * d;
  const T* sr = sin_t + (size_t)t * d;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float a1 = to_f(xr[i]), a2 = to_f(xr[i + half]);
    const float c1 = to_f(cr[i]), c2 = to_f(cr[i + half]);
    const float s1 = to_f(sr[i]), s2 = to_f(sr[i + half]);
    if (BWD) {
      yr[i] = from_f<T>(__fadd_rn(__fmul_rn(a1, c1), __fmul_rn(a2, s2)));
      yr[i + half] = from_f<T>(__fsub_rn(__fmul_rn(a2, c2), __fmul_rn(a1, s1)));
    } else {
      yr[i] = from_f<T>(__fsub_rn(__fmul_rn(a1, c1), __fmul_rn(a2, s1)));
      yr[i + half] = from_f<T>(__fadd_rn(__fmul_rn(a2, c2), __fmul_rn(a1, s2)));
    }
  }
}

#define INSTANTIATE(S, T)                                                                      \
  extern "C" __global__ void rope_fwd_##S(const T* x, const T* cos_t, const T* sin_t, T* y,    \
                                          int rows, int half, int heads, int seq) {            \
    rotate<T, false>(x, cos_t, sin_t, y, rows, half, heads, seq);                              \
  }                                                                                            \
  extern "C" __global__ void rope_bwd_##S(const T* dy, const T* cos_t, const T* sin_t, T* dx,  \
                                          int rows, int half, int heads, int seq) {            \
    rotate<T, true>(dy, cos_t, sin_t, dx, rows, half, heads, seq);                             \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
