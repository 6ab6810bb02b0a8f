// Fused AdamW step over fp32 master weights and moments, writing the low-precision working
// copy in the same pass (CPU reference: crates/kernels/src/adamw.rs). The update is
// torch.optim.AdamW's (foreach=False) with the trainer optimizer's roundings, so GPU and CPU
// agree to the last bit (division and sqrt are correctly rounded on both; fused multiply-adds
// are written out as __fmaf_rn and nothing else is contracted):
//   p = p * (1 - lr wd)                      (only when decay != 0)
//   m = lerp(m, g, w)                        (torch's two branches, each one fma)
//   v = fma((1 - b2) g, g, b2 v)             (torch's addcmul)
//   p = p - (m * step_size) / (sqrt(v) / sqrt(bc2) + eps)
// `+ 0.f` after each scalar multiply mirrors candle's affine (x * mul + add), which the CPU
// path uses, so that even the sign of zero matches.
#include "common.cuh"

struct AdamWArgs {
  float decay_mul;      // 1 - lr * wd
  float lerp_w;         // w = 1 - b1
  float lerp_neg_rest;  // -(1 - w), torch's upper lerp branch
  float b2, one_minus_b2;
  float bc2_sqrt;       // sqrt(1 - b2^t)
  float eps;
  float step_size;      // lr / (1 - b1^t)
  int decay;            // 0: skip the decoupled decay
  int lerp_hi;          // |w| >= 0.5: the upper lerp branch
};

__device__ __forceinline__ float affine(float x, float mul) { return __fadd_rn(__fmul_rn(x, mul), 0.f); }

__device__ __forceinline__ float update(float* p, const float* g, float* m, float* v, size_t i,
                                        const AdamWArgs& a) {
  float pi = p[i];
  const float gi = g[i];
  const float diff = __fsub_rn(gi, m[i]);
  const float mi = a.lerp_hi ? __fmaf_rn(diff, a.lerp_neg_rest, gi) : __fmaf_rn(diff, a.lerp_w, m[i]);
  const float vi = __fmaf_rn(affine(gi, a.one_minus_b2), gi, affine(v[i], a.b2));
  if (a.decay) pi = affine(pi, a.decay_mul);
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
  pi = __fsub_rn(pi, __fdiv_rn(affine(mi, a.step_size), denom));
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
