// kernels/gated.cu on the emulator; launches as crates/kernels/src/cuda/gated.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/gated.cu"
}  // namespace k
}  // namespace

#define WRAP(KIND, S, T)                                                                          \
  extern "C" void emu_gated_##KIND##_fwd_##S(const T* g, const T* u, T* y, size_t n) {           \
    emu::launch(elementwise_grid(n), dim3(kBlock), k::gated_##KIND##_fwd_##S, g, u, y, n);       \
  }                                                                                               \
  extern "C" void emu_gated_##KIND##_bwd_##S(const T* g, const T* u, const T* dy, T* dgu,        \
                                             size_t n) {                                          \
    emu::launch(elementwise_grid(n), dim3(kBlock), k::gated_##KIND##_bwd_##S, g, u, dy, dgu, n); \
  }
WRAP(silu, f32, float)
WRAP(silu, bf16, bf16)
WRAP(gelu_tanh, f32, float)
WRAP(gelu_tanh, bf16, bf16)
WRAP(gelu_erf, f32, float)
WRAP(gelu_erf, bf16, bf16)
