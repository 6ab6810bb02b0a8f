// kernels/gelu.cu on the emulator; launches as crates/kernels/src/cuda/gelu.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/gelu.cu"
}  // namespace k
}  // namespace

#define WRAP(KIND, S, T)                                                                     \
  extern "C" void emu_gelu_##KIND##_fwd_##S(const T* x, T* y, size_t n) {                   \
    emu::launch(elementwise_grid(n), dim3(kBlock), k::gelu_##KIND##_fwd_##S, x, y, n);      \
  }                                                                                          \
  extern "C" void emu_gelu_##KIND##_bwd_##S(const T* x, const T* dy, T* dx, size_t n) {     \
    emu::launch(elementwise_grid(n), dim3(kBlock), k::gelu_##KIND##_bwd_##S, x, dy, dx, n); \
  }
WRAP(tanh, f32, float)
WRAP(tanh, bf16, bf16)
WRAP(erf, f32, float)
WRAP(erf, bf16, bf16)
