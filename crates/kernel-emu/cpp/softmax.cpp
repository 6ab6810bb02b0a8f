// kernels/softmax.cu on the emulator; launches as crates/kernels/src/cuda/softmax.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/softmax.cu"
}  // namespace k
}  // namespace

#define WRAP(S, T)                                                                            \
  extern "C" void emu_softmax_fwd_##S(const T* s, T* y, int rows, int c, float scale) {       \
    emu::launch(rows_grid(rows), dim3(kBlock), k::softmax_fwd_##S, s, y, c, scale);          \
  }                                                                                           \
  extern "C" void emu_softmax_masked_fwd_##S(const T* s, const T* mask, const k::MaskIndex* mi, \
                                             T* y, int rows, int c, float scale) {            \
    emu::launch(rows_grid(rows), dim3(kBlock), k::softmax_masked_fwd_##S, s, mask, *mi, y, c, \
                scale);                                                                       \
  }                                                                                           \
  extern "C" void emu_softmax_bwd_##S(const T* y, const T* dy, T* ds, int rows, int c,        \
                                      float scale) {                                          \
    emu::launch(rows_grid(rows), dim3(kBlock), k::softmax_bwd_##S, y, dy, ds, c, scale);     \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
