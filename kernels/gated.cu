// Gated activations of the feed-forward, y = act(g) * u (SwiGLU: SiLU; GeGLU: the tanh GELU of
// gelu.cuh, or its exact erf GELU: ModernBERT's), forward and backward, elementwise (CPU reference: crates/kernels/src/cpu/gated.rs,
// same formulas). Backward from dy: dg = dy * u * act'(g), du = dy * act(g), written to one
// buffer of 2n values, dg first. Grid-stride loops, computed in float.
//   SiLU: s = 1 / (1 + e^{-x}); f = x s; f' = s (1 + x (1 - s)). e^{-x} = inf for very negative
//   x gives s = 0: f = -0, f' = 0, no NaN.
#include "common.cuh"
#include "gelu.cuh"

#define GRID_STRIDE(n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float silu_sigmoid(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float f_silu(float x) { return x * silu_sigmoid(x); }
__device__ __forceinline__ float df_silu(float x) {
  const float s = silu_sigmoid(x);
  return s * (1.f + x * (1.f - s));
}

#define INSTANTIATE_ACT(NAME, F, DF, S, T)                                                          \
  extern "C" __global__ void gated_##NAME##_fwd_##S(const T* g, const T* u, T* y, size_t n) {     \
    GRID_STRIDE(n) y[i] = from_f<T>(F(to_f(g[i])) * to_f(u[i]));                                   \
  }                                                                                                \
  extern "C" __global__ void gated_##NAME##_bwd_##S(const T* g, const T* u, const T* dy, T* dgu,  \
                                                    size_t n) {                                    \
    GRID_STRIDE(n) {                                                                               \
      const float a = to_f(g[i]), b = to_f(u[i]), d = to_f(dy[i]);                                 \
      dgu[i] = from_f<T>(d * b * DF(a));                                                           \
      dgu[n + i] = from_f<T>(d * F(a));                                                            \
    }                                                                                              \
  }
#define INSTANTIATE(S, T)                                \
  INSTANTIATE_ACT(silu, f_silu, df_silu, S, T)           \
  INSTANTIATE_ACT(gelu_tanh, f_tanh, df_tanh, S, T)       \
  INSTANTIATE_ACT(gelu_erf, f_erf, df_erf, S, T)
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
