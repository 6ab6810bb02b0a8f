// IEEE half for the CUDA emulator, on the compiler's _Float16 (conversions round to nearest
// even, as __float2half_rn).
#pragma once
#include "cuda_emu.h"

struct __half {
  _Float16 v;
  __half() = default;
  __half(float f) : v((_Float16)f) {}
  operator float() const { return (float)v; }
};
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h.v; }
typedef __half half;
