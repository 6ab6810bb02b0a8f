// Scaled, masked softmax over the last dimension, forward and backward (CPU reference:
// crates/kernels/src/cpu/softmax.rs).   y = softmax(s * scale + mask),
// ds = scale * y * (dy - sum(dy * y)). The additive mask (0 / -inf) is read through up to four
// (dims, strides) pairs, so a (T, T) causal mask broadcast to (B, H, T, T) is never
// materialised. A fully masked row gives zeros, not NaN. One block per row; the row is read
// three times (max, sum, write) rather than staged in shared memory, so any row length works.
#include "common.cuh"

struct MaskIndex {
  // Dimensions and element strides of the (broadcast) mask, outermost first, padded on the
  // left with (1, 0); the last pair is the row itself.
  long long d0, d1, d2, d3;
  long long s0, s1, s2, s3;
  long long start;
};

__device__ __forceinline__ long long mask_row(const MaskIndex& m, long long r) {
  // Rows enumerate dims 0..2 in row-major order.
  const long long i2 = r % m.d2;
  r /= m.d2;
  const long long i1 = r % m.d1;
  r /= m.d1;
  const long long i0 = r % m.d0;
  return m.start + i0 * m.s0 + i1 * m.s1 + i2 * m.s2;
}

template <typename T, typename M>
__device__ void fwd(const T* s, const M* mask, MaskIndex mi, T* y, int c, float scale) {
  const size_t row = blockIdx.x;
  const T* sr = s + row * c;
  T* yr = y + row * c;
  const long long moff = mask ? mask_row(mi, (long long)row) : 0;
#define LOGIT(j) (to_f(sr[j]) * scale + (mask ? to_f(mask[moff + (long long)(j) * mi.s3]) : 0.f))
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < c; j += blockDim.x) mx = fmaxf(mx, LOGIT(j));
  mx = block_max(mx);
  if (mx == -INFINITY) {
    for (int j = threadIdx.x; j < c; j += blockDim.x) yr[j] = from_f<T>(0.f);
    return;
  }
  float sum = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) sum += expf(LOGIT(j) - mx);
  const float inv = 1.f / block_sum(sum);
  for (int j = threadIdx.x; j < c; j += blockDim.x) yr[j] = from_f<T>(expf(LOGIT(j) - mx) * inv);
#undef LOGIT
}

template <typename T>
__device__ void bwd(const T* y, const T* dy, T* ds, int c, float scale) {
  const size_t row = blockIdx.x;
  const T* yr = y + row * c;
  const T* gr = dy + row * c;
  float dot = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) dot += to_f(yr[j]) * to_f(gr[j]);
  dot = block_sum(dot);
  for (int j = threadIdx.x; j < c; j += blockDim.x)
    ds[row * c + j] = from_f<T>(scale * to_f(yr[j]) * (to_f(gr[j]) - dot));
}

#define INSTANTIATE(S, T)                                                                     \
  extern "C" __global__ void softmax_fwd_##S(const T* s, T* y, int c, float scale) {         \
    MaskIndex none = {1, 1, 1, 1, 0, 0, 0, 0, 0};                                             \
    fwd<T, T>(s, (const T*)nullptr, none, y, c, scale);                                       \
  }                                                                                           \
  extern "C" __global__ void softmax_masked_fwd_##S(const T* s, const T* mask, MaskIndex mi, \
                                                    T* y, int c, float scale) {              \
    fwd<T, T>(s, mask, mi, y, c, scale);                                                      \
  }                                                                                           \
  extern "C" __global__ void softmax_bwd_##S(const T* y, const T* dy, T* ds, int c,          \
                                             float scale) {                                   \
    bwd<T>(y, dy, ds, c, scale);                                                              \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
