// kernels/dropout.cu on the emulator; launches as crates/kernels/src/cuda/dropout.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/dropout.cu"
}  // namespace k
}  // namespace

#define WRAP(S, T)                                                                            \
  extern "C" void emu_dropout_##S(const T* x, T* y, size_t n, unsigned long long seed,       \
                                  unsigned long long counter, float p, float scale) {        \
    emu::launch(elementwise_grid(n), dim3(kBlock), k::dropout_##S, x, y, n, seed, counter, p, \
                scale);                                                                       \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
