// kernels/cross_entropy.cu on the emulator; launches as crates/kernels/src/cuda/cross_entropy.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/cross_entropy.cu"
}  // namespace k
}  // namespace

// Forward: the summed loss, each row's logsumexp (n), and the first bad row + 1 in `bad`
// (u32::MAX when every target is in range). `w` may be null.
#define WRAP(S, T)                                                                             \
  extern "C" void emu_cross_entropy_fwd_##S(const T* x, const uint32_t* t, const float* w,     \
                                            int n, int v, float* loss, float* lse,             \
                                            uint32_t* bad) {                                   \
    float* rows = scratch(std::max(1, n));                                                     \
    *bad = 0xffffffffu;                                                                        \
    if (n > 0)                                                                                 \
      emu::launch(rows_grid(n), dim3(kBlock), k::cross_entropy_fwd_##S, x, t, w, rows, lse,   \
                  (unsigned*)bad, v);                                                          \
    emu::launch(dim3(1), dim3(1024), k::cross_entropy_sum_rows, (const float*)rows, loss, n);  \
    delete[] rows;                                                                             \
  }                                                                                            \
  extern "C" void emu_cross_entropy_bwd_##S(const T* x, const uint32_t* t, const float* w,     \
                                            const float* lse, T* dx, T* dw, float g, int n,    \
                                            int v) {                                           \
    if (n > 0)                                                                                 \
      emu::launch(rows_grid(n), dim3(kBlock), k::cross_entropy_bwd_##S, x, t, w, lse, dx, dw, \
                  g, v);                                                                       \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
