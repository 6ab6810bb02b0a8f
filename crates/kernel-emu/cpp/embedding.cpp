// kernels/embedding.cu on the emulator; launches as crates/kernels/src/cuda/embedding.rs.
#include "prelude.h"
#include <algorithm>
namespace {
namespace k {
#include "../../../kernels/embedding.cu"
}  // namespace k
}  // namespace

// FWD_ROW_BLOCKS there.
constexpr int kFwdRowBlocks = 8192;

#define WRAP(S, T)                                                                             \
  extern "C" void emu_embedding_fwd_##S(const T* table, const uint32_t* ids, T* y, int n,      \
                                        int c, int vocab) {                                    \
    if (n == 0 || c == 0) return;                                                              \
    emu::launch(dim3((c + 255) / 256, std::min(n, kFwdRowBlocks)), dim3(256),                  \
                k::embedding_fwd_##S, table, ids, y, n, c, vocab);                             \
  }                                                                                            \
  /* d_table must hold zeros (the launcher allocates it zeroed). */                            \
  extern "C" void emu_embedding_bwd_##S(const uint32_t* ids, const uint32_t* starts,           \
                                        const uint32_t* positions, const T* dy, T* d_table,    \
                                        int buckets, int c) {                                  \
    if (buckets == 0) return;                                                                  \
    emu::launch(dim3(buckets, (c + 255) / 256), dim3(256), k::embedding_bwd_##S, ids, starts, \
                positions, dy, d_table, c);                                                    \
  }
WRAP(f32, float)
WRAP(bf16, bf16)
