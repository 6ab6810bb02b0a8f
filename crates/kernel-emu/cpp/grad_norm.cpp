// kernels/grad_norm.cu on the emulator; launches as crates/kernels/src/cuda/grad_norm.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/grad_norm.cu"
}  // namespace k
}  // namespace

// Host pointers stand in for device addresses: the kernels read (pointer, length) pairs
// from arrays, exactly as the Rust side uploads them.
extern "C" double emu_grad_sumsq(const uint64_t* ptrs, const uint64_t* lens, int chunks,
                                 float unscale) {
  float* partial = scratch(std::max(1, chunks));
  double out = 0.0;
  emu::launch(dim3(chunks), dim3(256), k::grad_sumsq_chunks, ptrs, lens, unscale, partial);
  emu::launch(dim3(1), dim3(1024), k::grad_norm_finish, (const float*)partial, chunks, &out);
  delete[] partial;
  return out;
}
extern "C" void emu_grad_scale(const uint64_t* ptrs, const uint64_t* lens, int chunks,
                               float factor) {
  emu::launch(dim3(chunks), dim3(256), k::grad_scale_chunks, ptrs, lens, factor);
}
