// Fused AdamW step over fp32 master weights and moments, writing the low-precision working
// copy in the same pass (CPU reference: crates/kernels/src/adamw.rs). The update is
// torch.optim.AdamW's (foreach=False) in the operation order of the CPU path, each operation
// rounded separately (__fmul_rn / __fadd_rn: no fused multiply-add), so GPU and CPU agree to
// the last bit up to sqrt and division, which are correctly rounded on both:
//   p = p * (1 - lr wd)                      (only when decay_mul != 1)
//   m = m b1 + g (1 - b1);  v = v b2 + g^2 (1 - b2)
//   p = p - (m / (sqrt(v) / sqrt(bc2) + eps)) * (lr / bc1)
// `+ 0.f` after each scalar multiply mirrors candle's affine (x * mul + add), which the CPU
// path uses, so that even the sign of zero matches.
#include "common.cuh"

struct AdamWArgs {
  float decay_mul;    // 1 - lr * wd
  float b1, one_minus_b1, b2, one_minus_b2;
  float inv_bc2_sqrt; // 1 / sqrt(1 - b2^t)
  float eps;
  float step_size;    // lr / (1 - b1^t)
  int decay;          // 0: skip the decoupled decay
};

__device__ __forceinline__ float affine(float x, float mul) { return __fadd_rn(__fmul_rn(x, mul), 0.f); }

__device__ __forceinline__ float update(float* p, const float* g, float* m, float* v, size_t i,
                                        const AdamWArgs& a) {
  float pi = p[i];
  const float gi = g[i];
  if (a.decay) pi = affine(pi, a.decay_mul);
  const float mi = __fadd_rn(affine(m[i], a.b1), affine(gi, a.one_minus_b1));
  const float vi = __fadd_rn(affine(v[i], a.b2), affine(__fmul_rn(gi, gi), a.one_minus_b2));
  const float denom = __fadd_rn(__fmul_rn(affine(__fsqrt_rn(vi), a.inv_bc2_sqrt), 1.f), a.eps);
  pi = __fsub_rn(pi, affine(__fdiv_rn(mi, denom), a.step_size));
  m[i] = mi;
  v[i] = vi;
  p[i] = pi;
  return pi;
}

#define GRID_STRIDE(n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, AdamWArgs a,
                                     size_t n) {
  GRID_STRIDE(n) update(p, g, m, v, i, a);
}
extern "C" __global__ void adamw_bf16(float* p, const float* g, float* m, float* v,
                                      __nv_bfloat16* work, AdamWArgs a, size_t n) {
  GRID_STRIDE(n) work[i] = __float2bfloat16_rn(update(p, g, m, v, i, a));
}
extern "C" __global__ void adamw_f16(float* p, const float* g, float* m, float* v, __half* work,
                                     AdamWArgs a, size_t n) {
  GRID_STRIDE(n) work[i] = __float2half_rn(update(p, g, m, v, i, a));
}
