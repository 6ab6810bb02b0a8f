// kernels/bias_act.cu on the emulator; launches as crates/kernels/src/cuda/bias_act.rs.
#include "prelude.h"
#include <algorithm>
namespace {
namespace k {
#include "../../../kernels/bias_act.cu"
}  // namespace k
}  // namespace

// ROWS_PER_CHUNK and FWD_ROW_BLOCKS there.
constexpr int kRowsPerChunk = 256;
constexpr int kFwdRowBlocks = 8192;

// `act`: 0 none, 1 GELU tanh, 2 GELU erf (ACT_* of bias_act.cu).
#define WRAP(S, T)                                                                             \
  extern "C" void emu_bias_act_fwd_##S(int act, const T* x, const T* b, T* y, int rows,        \
                                       int n) {                                                \
    if (rows == 0) return;                                                                     \
    auto f = act == 0 ? k::bias_add_fwd_##S                                                    \
                      : (act == 1 ? k::bias_gelu_tanh_fwd_##S : k::bias_gelu_erf_fwd_##S);     \
    emu::launch(dim3((n + 255) / 256, std::min(rows, kFwdRowBlocks)), dim3(256), f, x, b, y,   \
                rows, n);                                                                      \
  }                                                                                            \
  /* out: without an activation db (n); with one (rows + 1, n) = dz rows, then db. */          \
  extern "C" void emu_bias_act_bwd_##S(int act, const T* x, const T* b, const T* dy, T* out,   \
                                       int rows, int n) {                                      \
    const int chunks = std::max(1, (rows + kRowsPerChunk - 1) / kRowsPerChunk);                \
    float* partial = scratch((size_t)chunks * n);                                              \
    auto f = act == 0 ? k::bias_add_bwd_partial_##S                                            \
                      : (act == 1 ? k::bias_gelu_tanh_bwd_partial_##S                          \
                                  : k::bias_gelu_erf_bwd_partial_##S);                         \
    const bool none = act == 0;                                                                \
    emu::launch(dim3((n + 31) / 32, chunks), dim3(32, 8), f, none ? nullptr : x,               \
                none ? nullptr : b, dy, none ? nullptr : out, partial, rows, n, kRowsPerChunk); \
    emu::launch(dim3((n + 255) / 256), dim3(256), k::bias_bwd_final_##S,                      \
                (const float*)partial, out + (none ? 0 : (size_t)rows * n), n, chunks);        \
    delete[] partial;                                                                          \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
