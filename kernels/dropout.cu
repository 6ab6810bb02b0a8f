// Inverted dropout with the mask drawn in the kernel (crates/kernels/src/cpu/dropout.rs):
// element i is dropped when draw i of the seeded stream, splitmix64(seed ^ splitmix64(counter
// + i)) as a 24-bit uniform, is below p. The same numbers as the CPU's, so the same mask; the
// backward launches the same kernel on the gradient. Grid-stride loop, computed in float.
#include "common.cuh"

// SplitMix64's finaliser, as crate::rng::splitmix64.
__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

#define INSTANTIATE(S, T)                                                                        \
  extern "C" __global__ void dropout_##S(const T* x, T* y, size_t n, unsigned long long seed,   \
                                         unsigned long long counter, float p, float scale) {    \
    /* The kept elements' factor, rounded to T as a mask tensor of T would hold it. */          \
    const float kept = to_f(from_f<T>(scale));                                                   \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;                        \
         i += (size_t)gridDim.x * blockDim.x) {                                                  \
      const unsigned long long h = splitmix64(seed ^ splitmix64(counter + i));                  \
      const float u = (float)(h >> 40) * (1.0f / 16777216.0f);                                   \
      y[i] = from_f<T>(to_f(x[i]) * (u < p ? 0.0f : kept));                                      \
    }                                                                                            \
  }
INSTANTIATE(f32, float)
INSTANTIATE(bf16, __nv_bfloat16)
