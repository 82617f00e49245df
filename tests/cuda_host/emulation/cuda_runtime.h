// Stand-in for <cuda_runtime.h> when kernel headers are compiled as host C++ for the SIMT
// emulator (simt.h): the CUDA keywords become plain C++, the built-in index variables read the
// emulated thread's, and the device intrinsics the attention kernels use are emulated.
#pragma once
#include <cmath>
#include <cstdint>

#include "simt.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = struct EmulatedStream*;

#define threadIdx (::emu::current_thread().thread_idx)
#define blockIdx (::emu::machine().block_idx)
#define blockDim (::emu::machine().block_dim)
#define gridDim (::emu::machine().grid_dim)

inline void __syncthreads() { emu::sync_threads(); }

inline float __shfl_xor_sync(unsigned int mask, float value, int lane_mask) {
  return emu::warp_collective<float, float>(
      1, mask, value, [lane_mask](const std::array<float, 32>& in, std::array<float, 32>& out, uint32_t m) {
        for (int lane = 0; lane < 32; ++lane) {
          if (((m >> lane) & 1u) == 0) continue;
          const int source = lane ^ lane_mask;
          if (((m >> source) & 1u) == 0) emu::fail("__shfl_xor_sync reads a lane outside the mask");
          out[lane] = in[source];
        }
      });
}

// The fast-math exponential of the recurrent kernels, exact here.
inline float __expf(float x) { return std::exp(x); }

// Threads of the emulator never run concurrently: a plain add is atomic.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}
