// A bias added over rows with an optional GELU fused in: y = act(x + b), x (rows, n), b (n)
// (CPU reference: crates/kernels/src/cpu/bias_act.rs). Computed in float, stored in T.
//
// Backward, with z = x + b: dz = dy * act'(z) (no dz kernel output without an activation: dz is
// dy) and db = sum over rows of dz, in float and deterministic: fixed chunks of rows give
// partial sums (bwd_partial), which bwd_final adds in chunk order. Each warp reads 32
// neighbouring columns of a row, so the column sums read rows coalesced, where candle's
// reduction over dim 0 gives each column to one block and strides through memory by n.
#include "common.cuh"
#include "gelu.cuh"

#define ACT_NONE 0
#define ACT_GELU_TANH 1
#define ACT_GELU_ERF 2

template <int A> __device__ __forceinline__ float act(float z) {
  if (A == ACT_GELU_TANH) return f_tanh(z);
  if (A == ACT_GELU_ERF) return f_erf(z);
  return z;
}

template <int A> __device__ __forceinline__ float dact(float z) {
  if (A == ACT_GELU_TANH) return df_tanh(z);
  if (A == ACT_GELU_ERF) return df_erf(z);
  return 1.f;
}

// grid (ceil(n / blockDim.x), <= rows), block (256): column blockIdx.x * blockDim.x + tid of
// rows blockIdx.y, + gridDim.y, ... No division per element.
template <int A, typename T>
__device__ void fwd(const T* x, const T* b, T* y, int rows, int n) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n) return;
  const float bc = to_f(b[col]);
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const size_t i = (size_t)r * n + col;
    y[i] = from_f<T>(act<A>(to_f(x[i]) + bc));
  }
}

// grid (ceil(n / 32), chunks), block (32, 8). Rows [chunk * rows_per_chunk, ...) of 32 columns:
// writes dz (with an activation) and partial[chunk * n + col] = the sum of dz over those rows.
// Without an activation x and dz are not read or written (they may be null).
template <int A, typename T>
__device__ void bwd_partial(const T* x, const T* b, const T* dy, T* dz, float* partial, int rows,
                            int n, int rows_per_chunk) {
  __shared__ float s[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(rows, r0 + rows_per_chunk);
  float acc = 0.f;
  if (col < n) {
    const float bc = A == ACT_NONE ? 0.f : to_f(b[col]);
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const size_t i = (size_t)r * n + col;
      float g = to_f(dy[i]);
      if (A != ACT_NONE) {
        g *= dact<A>(to_f(x[i]) + bc);
        dz[i] = from_f<T>(g);
      }
      acc += g;
    }
  }
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) t += s[k][threadIdx.x];
    partial[(size_t)blockIdx.y * n + col] = t;
  }
}

// grid (ceil(n / 256)), block (256): db[col] = the chunks' partials added in order.
template <typename T>
__device__ void bwd_final(const float* partial, T* db, int n, int chunks) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= n) return;
  float t = 0.f;
  for (int k = 0; k < chunks; k++) t += partial[(size_t)k * n + col];
  db[col] = from_f<T>(t);
}

#define INSTANTIATE_ACT(NAME, A, S, T)                                                        \
  extern "C" __global__ void bias_##NAME##_fwd_##S(const T* x, const T* b, T* y, int rows,    \
                                                   int n) {                                   \
    fwd<A, T>(x, b, y, rows, n);                                                              \
  }                                                                                           \
  extern "C" __global__ void bias_##NAME##_bwd_partial_##S(const T* x, const T* b,            \
                                                           const T* dy, T* dz, float* partial, \
                                                           int rows, int n, int rpc) {        \
    bwd_partial<A, T>(x, b, dy, dz, partial, rows, n, rpc);                                   \
  }
#define INSTANTIATE(S, T)                                                                     \
  INSTANTIATE_ACT(add, ACT_NONE, S, T)                                                        \
  INSTANTIATE_ACT(gelu_tanh, ACT_GELU_TANH, S, T)                                             \
  INSTANTIATE_ACT(gelu_erf, ACT_GELU_ERF, S, T)                                               \
  extern "C" __global__ void bias_bwd_final_##S(const float* partial, T* db, int n,           \
                                                int chunks) {                                 \
    bwd_final<T>(partial, db, n, chunks);                                                     \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
