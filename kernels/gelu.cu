// GELU, tanh and erf forms, forward and backward (CPU reference: crates/kernels/src/cpu/gelu.rs,
// same formulas and constants). Elementwise, grid-stride loops, computed in float.
//   tanh: u = k (x + 0.044715 x^3), k = sqrt(2/pi);  y = x/2 (1 + tanh u)
//         y' = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 * 0.044715 x^2)
//   erf:  y = x/2 (1 + erf(x / sqrt 2));  y' = (1 + erf(x / sqrt 2))/2 + x exp(-x^2/2) / sqrt(2 pi)
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978845608028654f
#define INV_SQRT_2PI 0.3989422804014327f
#define FRAC_1_SQRT_2 0.7071067811865476f
#define C3 0.044715f

__device__ __forceinline__ float f_tanh(float x) {
  return 0.5f * x * (1.f + tanhf(SQRT_2_OVER_PI * x * (1.f + C3 * x * x)));
}
__device__ __forceinline__ float df_tanh(float x) {
  const float x2 = x * x;
  const float t = tanhf(SQRT_2_OVER_PI * x * (1.f + C3 * x2));
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * SQRT_2_OVER_PI * (1.f + 3.f * C3 * x2);
}
__device__ __forceinline__ float f_erf(float x) { return (erff(x * FRAC_1_SQRT_2) + 1.f) * 0.5f * x; }
__device__ __forceinline__ float df_erf(float x) {
  return 0.5f * (1.f + erff(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
}

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
