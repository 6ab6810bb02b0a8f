// kernels/rope.cu on the emulator; launches as crates/kernels/src/cuda/rope.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/rope.cu"
}  // namespace k
}  // namespace

// Rows per block, one warp each (ROWS_PER_BLOCK there).
constexpr int kRowsPerBlock = 8;

#define WRAP(S, T)                                                                             \
  extern "C" void emu_rope_fwd_##S(const T* x, const T* cos_t, const T* sin_t, T* y, int rows, \
                                   int half, int heads, int seq) {                             \
    if (rows > 0)                                                                              \
      emu::launch(dim3((rows + kRowsPerBlock - 1) / kRowsPerBlock), dim3(32, kRowsPerBlock),   \
                  k::rope_fwd_##S, x, cos_t, sin_t, y, rows, half, heads, seq);                \
  }                                                                                            \
  extern "C" void emu_rope_bwd_##S(const T* dy, const T* cos_t, const T* sin_t, T* dx,         \
                                   int rows, int half, int heads, int seq) {                   \
    if (rows > 0)                                                                              \
      emu::launch(dim3((rows + kRowsPerBlock - 1) / kRowsPerBlock), dim3(32, kRowsPerBlock),   \
                  k::rope_bwd_##S, dy, cos_t, sin_t, dx, rows, half, heads, seq);              \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
