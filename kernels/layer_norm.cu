// LayerNorm over the last dimension, forward and backward (the CPU reference is
// crates/kernels/src/cpu/layer_norm.rs; same formulas, statistics in float).
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps), biased variance, two passes.
//   with xhat = (x - mean) * rstd and g = dy * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat,  db = sum_rows dy
// One block per row for the row-wise parts. dw and db are summed per 32-column tile over
// fixed chunks of rows into float partials, then over the chunks in order: deterministic.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void row_stats(const T* xr, int c, float eps, float* mean, float* rstd) {
  float s = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) s += to_f(xr[j]);
  const float m = block_sum(s) / (float)c;
  float q = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    const float d = to_f(xr[j]) - m;
    q += d * d;
  }
  const float var = block_sum(q) / (float)c;
  *mean = m;
  *rstd = 1.f / sqrtf(var + eps);
}

// grid (rows), block (256). x, y: (rows, c); w, b: (c).
template <typename T>
__device__ void fwd(const T* x, const T* w, const T* b, T* y, int c, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * c;
  T* yr = y + row * c;
  float mean, rstd;
  row_stats(xr, c, eps, &mean, &rstd);
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    yr[j] = from_f<T>((to_f(xr[j]) - mean) * rstd * to_f(w[j]) + to_f(b[j]));
}

// grid (rows), block (256). Writes dx and each row's (mean, rstd) for the dw/db pass.
template <typename T>
__device__ void bwd_dx(const T* x, const T* w, const T* dy, T* dx, float* stats, int c, float eps) {
  const size_t row = blockIdx.x;
  const T* xr = x + row * c;
  const T* gr = dy + row * c;
  float mean, rstd;
  row_stats(xr, c, eps, &mean, &rstd);
  float sg = 0.f, sgx = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    const float g = to_f(gr[j]) * to_f(w[j]);
    sg += g;
    sgx += g * (to_f(xr[j]) - mean) * rstd;
  }
  const float mg = block_sum(sg) / (float)c;
  const float mgx = block_sum(sgx) / (float)c;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    const float xhat = (to_f(xr[j]) - mean) * rstd;
    dx[row * c + j] = from_f<T>(rstd * (to_f(gr[j]) * to_f(w[j]) - mg - xhat * mgx));
  }
  if (threadIdx.x == 0) {
    stats[2 * row] = mean;
    stats[2 * row + 1] = rstd;
  }
}

// grid (ceil(c / 32), chunks), block (32, 8). Partial sums of dy * xhat and dy over rows
// [chunk * rows_per_chunk, ...) for 32 columns: partial[(chunk * 2 + 0|1) * c + col].
template <typename T>
__device__ void bwd_dwdb_partial(const T* x, const T* dy, const float* stats, float* partial,
                                 int rows, int c, int rows_per_chunk) {
  __shared__ float sw[8][33], sb[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(rows, r0 + rows_per_chunk);
  float aw = 0.f, ab = 0.f;
  if (col < c) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const float g = to_f(dy[(size_t)r * c + col]);
      const float xhat = (to_f(x[(size_t)r * c + col]) - stats[2 * r]) * stats[2 * r + 1];
      aw += g * xhat;
      ab += g;
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && col < c) {
    float tw = 0.f, tb = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) {
      tw += sw[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    partial[((size_t)blockIdx.y * 2) * c + col] = tw;
    partial[((size_t)blockIdx.y * 2 + 1) * c + col] = tb;
  }
}

// grid (ceil(c / 256)), block (256): dw[col] and db[col] from the chunks' partials, in order.
template <typename T>
__device__ void bwd_dwdb_final(const float* partial, T* dw, T* db, int c, int chunks) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= c) return;
  float tw = 0.f, tb = 0.f;
  for (int k = 0; k < chunks; k++) {
    tw += partial[((size_t)k * 2) * c + col];
    tb += partial[((size_t)k * 2 + 1) * c + col];
  }
  dw[col] = from_f<T>(tw);
  db[col] = from_f<T>(tb);
}

#define INSTANTIATE(S, T)                                                                      \
  extern "C" __global__ void layer_norm_fwd_##S(const T* x, const T* w, const T* b, T* y,     \
                                                int c, float eps) {                           \
    fwd<T>(x, w, b, y, c, eps);                                                                \
  }                                                                                            \
  extern "C" __global__ void layer_norm_bwd_dx_##S(const T* x, const T* w, const T* dy, T* dx, \
                                                   float* stats, int c, float eps) {          \
    bwd_dx<T>(x, w, dy, dx, stats, c, eps);                                                    \
  }                                                                                            \
  extern "C" __global__ void layer_norm_bwd_dwdb_partial_##S(                                  \
      const T* x, const T* dy, const float* stats, float* partial, int rows, int c, int rpc) { \
    bwd_dwdb_partial<T>(x, dy, stats, partial, rows, c, rpc);                                  \
  }                                                                                            \
  extern "C" __global__ void layer_norm_bwd_dwdb_final_##S(const float* partial, T* dw, T* db, \
                                                           int c, int chunks) {                \
    bwd_dwdb_final<T>(partial, dw, db, c, chunks);                                             \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
