// GELU, tanh and erf forms, forward and backward, elementwise (the formulas: gelu.cuh).
// Grid-stride loops, computed in float.
#include "common.cuh"
#include "gelu.cuh"

#define GRID_STRIDE(n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

#define INSTANTIATE(S, T)                                                                         \
  extern "C" __global__ void gelu_tanh_fwd_##S(const T* x, T* y, size_t n) {                     \
    GRID_STRIDE(n) y[i] = from_f<T>(f_tanh(to_f(x[i])));                                          \
  }                                                                                               \
  extern "C" __global__ void gelu_erf_fwd_##S(const T* x, T* y, size_t n) {                      \
    GRID_STRIDE(n) y[i] = from_f<T>(f_erf(to_f(x[i])));                                           \
  }                                                                                               \
  extern "C" __global__ void gelu_tanh_bwd_##S(const T* x, const T* dy, T* dx, size_t n) {       \
    GRID_STRIDE(n) dx[i] = from_f<T>(to_f(dy[i]) * df_tanh(to_f(x[i])));                          \
  }                                                                                               \
  extern "C" __global__ void gelu_erf_bwd_##S(const T* x, const T* dy, T* dx, size_t n) {        \
    GRID_STRIDE(n) dx[i] = from_f<T>(to_f(dy[i]) * df_erf(to_f(x[i])));                           \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
