// GELU, tanh and erf forms, and their derivatives, in float (CPU reference:
// crates/kernels/src/cpu/gelu.rs, same formulas and constants). Used by gelu.cu and by the
// fused bias + GELU of bias_act.cu.
//   tanh: u = k (x + 0.044715 x^3), k = sqrt(2/pi);  y = x/2 (1 + tanh u) = x s with
//         s = (1 + tanh u)/2 = 1 / (1 + e^{-2u});  y' = s + 2 x s (1 - s) k (1 + 3 * 0.044715 x^2)
//         Through s, not tanh: for negative x, 1 + tanh u cancels (and is 0 once tanhf rounds
//         to -1, near x = -6) where x s keeps its relative accuracy.
//   erf:  y = x/2 (1 + erf(x / sqrt 2));  y' = (1 + erf(x / sqrt 2))/2 + x exp(-x^2/2) / sqrt(2 pi)
//         with 1 + erf(x / sqrt 2) computed as erfc(-x / sqrt 2): no cancellation for negative x.
#pragma once

#define GELU_SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_INV_SQRT_2PI 0.3989422804014327f
#define GELU_FRAC_1_SQRT_2 0.7071067811865476f
#define GELU_C3 0.044715f

// s = 1 / (1 + e^{-2u}); e^{-2u} = inf for very negative x gives s = 0, not NaN.
__device__ __forceinline__ float sigmoid_2u(float x) {
  return 1.f / (1.f + expf(-2.f * GELU_SQRT_2_OVER_PI * x * (1.f + GELU_C3 * x * x)));
}
__device__ __forceinline__ float f_tanh(float x) { return x * sigmoid_2u(x); }
__device__ __forceinline__ float df_tanh(float x) {
  const float s = sigmoid_2u(x);
  return s + x * s * (1.f - s) * (2.f * GELU_SQRT_2_OVER_PI) * (1.f + 3.f * GELU_C3 * x * x);
}
__device__ __forceinline__ float f_erf(float x) {
  return erfcf(-x * GELU_FRAC_1_SQRT_2) * 0.5f * x;
}
__device__ __forceinline__ float df_erf(float x) {
  return 0.5f * erfcf(-x * GELU_FRAC_1_SQRT_2) + x * GELU_INV_SQRT_2PI * expf(-0.5f * x * x);
}
