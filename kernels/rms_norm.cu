// RMSNorm over the last dimension, forward and backward (the CPU reference is
// crates/kernels/src/cpu/rms_norm.rs; same formulas, statistics in float).
//   y = x * r * w,  r = 1 / sqrt(mean(x^2) + eps), rounded to T once.
//   with xhat = x * r and g = dy * w:
//   dx = r * (g - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat
// One block per row for the row-wise parts. dw is summed per 32-column tile over fixed chunks
// of rows into float partials, then over the chunks in order: deterministic (layer_norm.cu's
// scheme, with one partial per chunk instead of two).
#include "common.cuh"

// 1 / sqrt(mean(x^2) + eps) of one row; every thread of the block must call it.
template <typename T>
__device__ __forceinline__ float row_rstd(const T* xr, int c, float eps) {
  float s = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    const float v = to_f(xr[j]);
    s += v * v;
  }
  return 1.f / sqrtf(block_sum(s) / (float)c + eps);
}

// grid (rows), block (256). x, y: (rows, c); w: (c).
template <typename T>
__device__ void fwd(const T* x, const T* w, T* y, int c, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * c;
  T* yr = y + row * c;
  const float r = row_rstd(xr, c, eps);
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    yr[j] = from_f<T>(to_f(xr[j]) * r * to_f(w[j]));
}

// grid (rows), block (256). Writes dx (rows, c) and each row's r to rstd (rows) for the dw pass.
template <typename T>
__device__ void bwd_dx(const T* x, const T* w, const T* dy, T* dx, float* rstd, int c, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * c;
  const T* gr = dy + row * c;
  const float r = row_rstd(xr, c, eps);
  float sgx = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    sgx += to_f(gr[j]) * to_f(w[j]) * (to_f(xr[j]) * r);
  const float mgx = block_sum(sgx) / (float)c;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    const float xhat = to_f(xr[j]) * r;
    dx[row * c + j] = from_f<T>(r * (to_f(gr[j]) * to_f(w[j]) - xhat * mgx));
  }
  if (threadIdx.x == 0) rstd[row] = r;
}

// grid (ceil(c / 32), chunks), block (32, 8). The partial sum of dy * xhat over rows
// [chunk * rows_per_chunk, ...) for 32 columns: partial[chunk * c + col].
template <typename T>
__device__ void bwd_dw_partial(const T* x, const T* dy, const float* rstd, float* partial,
                               int rows, int c, int rows_per_chunk) {
  __shared__ float sw[8][32];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(rows, r0 + rows_per_chunk);
  float aw = 0.f;
  if (col < c) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8)
      aw += to_f(dy[(size_t)r * c + col]) * (to_f(x[(size_t)r * c + col]) * rstd[r]);
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  __syncthreads();
  if (threadIdx.y == 0 && col < c) {
    float tw = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) tw += sw[k][threadIdx.x];
    partial[(size_t)blockIdx.y * c + col] = tw;
  }
}

// grid (ceil(c / 256)), block (256): dw[col] from the chunks' partials, in chunk order.
template <typename T>
__device__ void bwd_dw_final(const float* partial, T* dw, int c, int chunks) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= c) return;
  float tw = 0.f;
  for (int k = 0; k < chunks; k++) tw += partial[(size_t)k * c + col];
  dw[col] = from_f<T>(tw);
}

#define INSTANTIATE(S, T)                                                                      \
  extern "C" __global__ void rms_norm_fwd_##S(const T* x, const T* w, T* y, int c, float eps) { \
    fwd<T>(x, w, y, c, eps);                                                                   \
  }                                                                                            \
  extern "C" __global__ void rms_norm_bwd_dx_##S(const T* x, const T* w, const T* dy, T* dx,   \
                                                 float* rstd, int c, float eps) {              \
    bwd_dx<T>(x, w, dy, dx, rstd, c, eps);                                                     \
  }                                                                                            \
  extern "C" __global__ void rms_norm_bwd_dw_partial_##S(                                      \
      const T* x, const T* dy, const float* rstd, float* partial, int rows, int c, int rpc) {  \
    bwd_dw_partial<T>(x, dy, rstd, partial, rows, c, rpc);                                     \
  }                                                                                            \
  extern "C" __global__ void rms_norm_bwd_dw_final_##S(const float* partial, T* dw, int c,     \
                                                       int chunks) {                           \
    bwd_dw_final<T>(partial, dw, c, chunks);                                                   \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
