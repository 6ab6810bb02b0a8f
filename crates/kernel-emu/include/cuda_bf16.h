// bfloat16 for the CUDA emulator: storage and the conversions Lantern's kernels use.
#pragma once
#include "cuda_emu.h"

struct __nv_bfloat16 {
  uint16_t x;
  __nv_bfloat16() = default;
  // CUDA's type converts implicitly from and to float (round to nearest even).
  __nv_bfloat16(float f);
  operator float() const;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = (uint32_t)h.x << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.x = (uint16_t)((u >> 16) | 0x40u);  // quiet NaN, sign kept
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    h.x = (uint16_t)(u >> 16);
  }
  return h;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __nv_bfloat16::__nv_bfloat16(float f) : x(__float2bfloat16_rn(f).x) {}
inline __nv_bfloat16::operator float() const { return __bfloat162float(*this); }
typedef __nv_bfloat16 nv_bfloat16;
