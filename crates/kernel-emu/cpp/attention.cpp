// kernels/attention.cu on the emulator; launches as crates/kernels/src/cuda/attention.rs:
// forward and the dK/dV and dQ kernels on grid (ceil(T / 64), H, B) with 128 threads; the
// D = rowsum(dO * O) kernel with one warp per (b, t, h), 8 warps (256 threads) a block.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/attention.cu"
}  // namespace k
}  // namespace

inline dim3 attn_grid(int b, int t, int h) {
  return dim3((unsigned)((t + 63) / 64), (unsigned)h, (unsigned)b);
}

// `pos` (B, T) or null: packed rows' positions, as the Rust launcher passes them.
#define WRAP_HD(S, T, HD)                                                                      \
  extern "C" void emu_attention_fwd_##S##_hd##HD(const T* qkv, const uint32_t* pos, T* y,      \
                                                 float* lse, int b, int t, int h,              \
                                                 float scale) {                                \
    emu::launch(attn_grid(b, t, h), dim3(128), k::attention_fwd_##S##_hd##HD, qkv, pos, y, lse, \
                t, h, scale);                                                                  \
  }                                                                                            \
  extern "C" void emu_attention_bwd_##S##_hd##HD(const T* qkv, const uint32_t* pos,            \
                                                 const T* y, const T* dy, const float* lse,    \
                                                 float* dd, T* dqkv, int b, int t, int h,      \
                                                 float scale) {                                \
    const long long rows = (long long)b * t * h;                                               \
    emu::launch(dim3((unsigned)((rows + 7) / 8)), dim3(256), k::attention_bwd_d_##S, y, dy, dd, \
                t, h, HD, rows);                                                               \
    emu::launch(attn_grid(b, t, h), dim3(128), k::attention_bwd_dkdv_##S##_hd##HD, qkv, pos,  \
                dy, lse, dd, dqkv, t, h, scale);                                               \
    emu::launch(attn_grid(b, t, h), dim3(128), k::attention_bwd_dq_##S##_hd##HD, qkv, pos, dy, \
                lse, dd, dqkv, t, h, scale);                                                   \
  }

#define WRAP(S, T) WRAP_HD(S, T, 32) WRAP_HD(S, T, 64) WRAP_HD(S, T, 128)
WRAP(f32, float)
WRAP(bf16, bf16)
