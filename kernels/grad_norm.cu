// Global gradient norm over many tensors in one launch, and in-place scaling of all of them in
// one launch (unscaling and clipping; CPU reference: crates/kernels/src/grad_norm.rs).
// The host cuts the tensors into chunks of at most CHUNK elements and uploads one
// (pointer, length) pair per chunk; one block per chunk. Each block writes its float sum of
// squares of (g * unscale) to `partial`; grad_norm_finish adds the partials in double in a
// fixed order. inf/NaN anywhere make the norm non-finite, which is the overflow check of the
// fp16 loss scaler.
#include "common.cuh"

// grid (chunks), block (256).
extern "C" __global__ void grad_sumsq_chunks(const uint64_t* ptrs, const uint64_t* lens,
                                             float unscale, float* partial) {
  const float* g = (const float*)ptrs[blockIdx.x];
  const size_t n = lens[blockIdx.x];
  float s = 0.f;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = g[i] * unscale;
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// grid (1), block (1024): sum of the partials in double, fixed order.
extern "C" __global__ void grad_norm_finish(const float* partial, int chunks, double* out) {
  __shared__ double part[1024];
  double s = 0.0;
  for (int i = threadIdx.x; i < chunks; i += blockDim.x) s += (double)partial[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = part[0];
}

// grid (chunks), block (256): g = g * factor in place.
extern "C" __global__ void grad_scale_chunks(const uint64_t* ptrs, const uint64_t* lens,
                                             float factor) {
  float* g = (float*)ptrs[blockIdx.x];
  const size_t n = lens[blockIdx.x];
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) g[i] = __fadd_rn(__fmul_rn(g[i], factor), 0.f);
}
