// Definitions of the forward launchers declared in attention_launchers.h; the generated files in
// instances/ include this header and instantiate one launcher each.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/attention/attention_launchers.h"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/forward_config.h"
#include "cuda/attention/forward_kernel.cuh"
#include "cuda/attention/launch_common.cuh"
#include "cuda/attention/splitkv_kernel.cuh"

namespace bigkern::cuda_attention {

// Grid: one CTA per (query tile, key chunk, head, batch); the host checks it fits gridDim.x.
template <ElementType kType, int kHeadDim, bool kSplitKv>
cudaError_t launch_forward_kernel(const AttentionParams& p, const SplitKvWorkspace& split, cudaStream_t stream) {
  static std::atomic<uint64_t> configured{0};
  constexpr size_t kShared = forward_shared_bytes(kHeadDim);
  const auto kernel = attention_forward_kernel<kType, kHeadDim, kSplitKv>;
  const cudaError_t error = raise_shared_limit(kernel, kShared, configured);
  if (error != cudaSuccess) return error;
  const int64_t q_tiles = (p.len_q + forward_block_m(kHeadDim) - 1) / forward_block_m(kHeadDim);
  const int64_t ctas = q_tiles * (kSplitKv ? split.num_splits : 1) * p.heads_q * p.batch;
  kernel<<<static_cast<unsigned int>(ctas), kForwardThreads, kShared, stream>>>(p, split);
  return cudaSuccess;
}

template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_forward(const AttentionParams& p, cudaStream_t stream) {
  return launch_forward_kernel<kType, kHeadDim, false>(p, SplitKvWorkspace{}, stream);
}

template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_forward_splitkv(const AttentionParams& p, const SplitKvWorkspace& split,
                                             cudaStream_t stream) {
  return launch_forward_kernel<kType, kHeadDim, true>(p, split, stream);
}

template <ElementType kType>
cudaError_t launch_attention_splitkv_combine(const AttentionParams& p, const SplitKvWorkspace& split,
                                             cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads_q * p.len_q;
  const int64_t blocks = (rows + kCombineWarps - 1) / kCombineWarps;
  const auto kernel = attention_splitkv_combine_kernel<kType>;
  kernel<<<static_cast<unsigned int>(blocks), kCombineWarps * 32, 0, stream>>>(p, split);
  return cudaSuccess;
}

}  // namespace bigkern::cuda_attention
