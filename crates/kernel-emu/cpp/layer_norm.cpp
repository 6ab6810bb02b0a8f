// kernels/layer_norm.cu on the emulator; launches as crates/kernels/src/cuda/layer_norm.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/layer_norm.cu"
}  // namespace k
}  // namespace

// Rows per chunk of the dw/db partial sums (ROWS_PER_CHUNK there).
constexpr int kRowsPerChunk = 256;

#define WRAP(S, T)                                                                             \
  extern "C" void emu_layer_norm_fwd_##S(const T* x, const T* w, const T* b, T* y, int rows,   \
                                         int c, float eps) {                                   \
    emu::launch(rows_grid(rows), dim3(kBlock), k::layer_norm_fwd_##S, x, w, b, y, c, eps);    \
  }                                                                                            \
  /* out: (rows + 2, c) = dx rows, dw, db, as the Rust launcher lays it out. */                \
  extern "C" void emu_layer_norm_bwd_##S(const T* x, const T* w, const T* dy, T* out,          \
                                         int rows, int c, float eps) {                         \
    const int chunks = std::max(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);                \
    float* stats = scratch(std::max(1, 2 * rows));                                             \
    float* partial = scratch((size_t)chunks * 2 * c);                                          \
    if (rows > 0)                                                                              \
      emu::launch(rows_grid(rows), dim3(kBlock), k::layer_norm_bwd_dx_##S, x, w, dy, out,     \
                  stats, c, eps);                                                              \
    emu::launch(dim3((c + 31) / 32, chunks), dim3(32, 8), k::layer_norm_bwd_dwdb_partial_##S, \
                x, dy, (const float*)stats, partial, rows, c, kRowsPerChunk);                  \
    emu::launch(dim3((c + 255) / 256), dim3(256), k::layer_norm_bwd_dwdb_final_##S,           \
                (const float*)partial, out + (size_t)rows * c, out + (size_t)rows * c + c, c,  \
                chunks);                                                                       \
    delete[] stats;                                                                            \
    delete[] partial;                                                                          \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
