// kernels/rms_norm.cu on the emulator; launches as crates/kernels/src/cuda/rms_norm.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/rms_norm.cu"
}  // namespace k
}  // namespace

// Rows per chunk of the dw partial sums (ROWS_PER_CHUNK there).
constexpr int kRowsPerChunk = 256;

#define WRAP(S, T)                                                                             \
  extern "C" void emu_rms_norm_fwd_##S(const T* x, const T* w, T* y, int rows, int c,          \
                                       float eps) {                                            \
    emu::launch(rows_grid(rows), dim3(kBlock), k::rms_norm_fwd_##S, x, w, y, c, eps);          \
  }                                                                                            \
  /* out: (rows + 1, c) = dx rows, dw, as the Rust launcher lays it out. */                    \
  extern "C" void emu_rms_norm_bwd_##S(const T* x, const T* w, const T* dy, T* out, int rows,  \
                                       int c, float eps) {                                     \
    const int chunks = std::max(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);                \
    float* rstd = scratch(std::max(1, rows));                                                  \
    float* partial = scratch((size_t)chunks * c);                                              \
    if (rows > 0)                                                                              \
      emu::launch(rows_grid(rows), dim3(kBlock), k::rms_norm_bwd_dx_##S, x, w, dy, out, rstd,  \
                  c, eps);                                                                     \
    emu::launch(dim3((c + 31) / 32, chunks), dim3(32, 8), k::rms_norm_bwd_dw_partial_##S, x,   \
                dy, (const float*)rstd, partial, rows, c, kRowsPerChunk);                      \
    emu::launch(dim3((c + 255) / 256), dim3(256), k::rms_norm_bwd_dw_final_##S,               \
                (const float*)partial, out + (size_t)rows * c, c, chunks);                     \
    delete[] rstd;                                                                             \
    delete[] partial;                                                                          \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
