// Stand-in for <cuda_fp16.h> under the SIMT emulator: __half as GCC's _Float16 (IEEE binary16,
// round to nearest even on conversion, as __float2half_rn).
#pragma once

struct __half {
  _Float16 value;
};
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half_rn(float f) { return {static_cast<_Float16>(f)}; }
