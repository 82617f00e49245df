// Host-side launch helper shared by the attention launchers (forward_launch.cuh, and meant for
// backward_launch.cuh too).
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace bigkern::cuda_attention {

// Raises a kernel's dynamic shared-memory limit above the default 48 KB, once per device (the
// attribute is per device; `configured` has one bit per device ordinal below 64, beyond which
// the attribute is simply set on every launch).
template <typename Kernel>
cudaError_t raise_shared_limit(Kernel kernel, size_t bytes, std::atomic<uint64_t>& configured) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int device = 0;
  const cudaError_t device_error = cudaGetDevice(&device);
  if (device_error != cudaSuccess) return device_error;
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit != 0 && (configured.load(std::memory_order_relaxed) & bit) != 0) return cudaSuccess;
  const cudaError_t error =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (error == cudaSuccess && bit != 0) configured.fetch_or(bit, std::memory_order_relaxed);
  return error;
}

}  // namespace bigkern::cuda_attention
