// Fused softmax cross-entropy, summed over rows with optional per-row weights (CPU reference:
// crates/kernels/src/cpu/cross_entropy.rs).
//   L = sum_i w_i (lse_i - x_i[t_i]),   dx_i = g w_i (exp(x_i - lse_i) - onehot(t_i)),
//   dw_i = g (lse_i - x_i[t_i]).
// The forward keeps each row's logsumexp (float, NaN for skipped rows); backward forms each
// probability once, exp(x - lse), in the pass that writes the gradient: the (N, V)
// probabilities are never stored. Rows of weight 0 are skipped (loss 0, gradient 0). A target
// >= V sets `bad` to (row + 1) (the smallest such row wins) and the host reports it.
#include "common.cuh"

// grid (N), block (256). loss_rows, lse: (N) float. w may be null (all ones).
template <typename T>
__device__ void fwd(const T* x, const uint32_t* t, const float* w, float* loss_rows, float* lse,
                    unsigned int* bad, int v) {
  const size_t row = blockIdx.x;
  const float wi = w ? w[row] : 1.f;
  const uint32_t ti = t[row];
  if (ti >= (uint32_t)v) {
    if (threadIdx.x == 0) {
      atomicMin(bad, (unsigned int)row + 1u);
      loss_rows[row] = 0.f;
      lse[row] = NAN;
    }
    return;
  }
  if (wi == 0.f) {
    if (threadIdx.x == 0) {
      loss_rows[row] = 0.f;
      lse[row] = NAN;
    }
    return;
  }
  const T* xr = x + row * v;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, to_f(xr[j]));
  mx = block_max(mx);
  float s = 0.f;
  for (int j = threadIdx.x; j < v; j += blockDim.x) s += expf(to_f(xr[j]) - mx);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const float l = mx + logf(s);
    lse[row] = l;
    loss_rows[row] = wi * (l - to_f(xr[ti]));
  }
}

// grid (1), block (1024): the loss as the sum of the rows' losses, in double, fixed order.
extern "C" __global__ void cross_entropy_sum_rows(const float* loss_rows, float* loss, int n) {
  __shared__ double part[1024];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += (double)loss_rows[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = (float)part[0];
}

// grid (N), block (256). dx: (N, V) in T; dw: (N) in T or null. lse: saved by fwd (NaN rows
// are recomputed) or null (all recomputed).
template <typename T>
__device__ void bwd(const T* x, const uint32_t* t, const float* w, const float* lse_saved, T* dx,
                    T* dw, float g, int v) {
  const size_t row = blockIdx.x;
  const float wi = w ? w[row] : 1.f;
  const uint32_t ti = min(t[row], (uint32_t)(v - 1));  // range checked by the forward
  const T* xr = x + row * v;
  T* dr = dx + row * v;
  if (wi == 0.f && !dw) {
    for (int j = threadIdx.x; j < v; j += blockDim.x) dr[j] = from_f<T>(0.f);
    return;
  }
  float l = lse_saved ? lse_saved[row] : NAN;
  if (isnan(l)) {
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, to_f(xr[j]));
    mx = block_max(mx);
    float s = 0.f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) s += expf(to_f(xr[j]) - mx);
    l = mx + logf(block_sum(s));
  }
  const float gw = g * wi;
  for (int j = threadIdx.x; j < v; j += blockDim.x) {
    float d = wi == 0.f ? 0.f : gw * expf(to_f(xr[j]) - l);
    if (j == (int)ti && wi != 0.f) d -= gw;
    dr[j] = from_f<T>(d);
  }
  if (dw && threadIdx.x == 0) dw[row] = from_f<T>(g * (l - to_f(xr[ti])));
}

#define INSTANTIATE(S, T)                                                                        \
  extern "C" __global__ void cross_entropy_fwd_##S(const T* x, const uint32_t* t, const float* w, \
                                                   float* loss_rows, float* lse,                 \
                                                   unsigned int* bad, int v) {                   \
    fwd<T>(x, t, w, loss_rows, lse, bad, v);                                                     \
  }                                                                                              \
  extern "C" __global__ void cross_entropy_bwd_##S(const T* x, const uint32_t* t, const float* w, \
                                                   const float* lse, T* dx, T* dw, float g,      \
                                                   int v) {                                      \
    bwd<T>(x, t, w, lse, dx, dw, g, v);                                                          \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
