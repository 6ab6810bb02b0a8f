// kernels/adamw.cu on the emulator; launches as crates/kernels/src/cuda/adamw.rs.
#include "prelude.h"
namespace {
namespace k {
#include "../../../kernels/adamw.cu"
}  // namespace k
}  // namespace

extern "C" void emu_adamw_f32(float* p, const float* g, float* m, float* v, const k::AdamWArgs* a,
                              size_t n) {
  emu::launch(elementwise_grid(n), dim3(kBlock), k::adamw_f32, p, g, m, v, *a, n);
}
extern "C" void emu_adamw_bf16(float* p, const float* g, float* m, float* v, bf16* work,
                               const k::AdamWArgs* a, size_t n) {
  emu::launch(elementwise_grid(n), dim3(kBlock), k::adamw_bf16, p, g, m, v, work, *a, n);
}
extern "C" void emu_adamw_f16(float* p, const float* g, float* m, float* v, __half* work,
                              const k::AdamWArgs* a, size_t n) {
  emu::launch(elementwise_grid(n), dim3(kBlock), k::adamw_f16, p, g, m, v, work, *a, n);
}
