// Definitions of the backward launchers declared in backward_launchers.h; the generated files in
// instances/ include this header and instantiate one launcher each. The kernels live in their own
// headers, which name no host API, so that tests/cuda_host can compile them as host code.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_config.h"
#include "cuda/attention/backward_dq_kernel.cuh"
#include "cuda/attention/backward_kernel.cuh"
#include "cuda/attention/backward_launchers.h"
#include "cuda/attention/backward_preprocess.cuh"
#include "cuda/attention/launch_common.cuh"

namespace bigkern::cuda_attention {

// Blocks of a grid-stride loop over `items`, capped (see kMaxPreprocessBlocks).
inline unsigned int capped_blocks(int64_t items, int64_t items_per_block) {
  const int64_t blocks = (items + items_per_block - 1) / items_per_block;
  return static_cast<unsigned int>(blocks < kMaxPreprocessBlocks ? blocks : kMaxPreprocessBlocks);
}

template <ElementType kType>
cudaError_t launch_attention_backward_preprocess(const AttentionParams& p, const BackwardBuffers& g,
                                                 cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads_q * p.len_q;
  attention_backward_preprocess_kernel<kType>
      <<<capped_blocks(rows, kRowsPerBlock), kPreprocessThreads, 0, stream>>>(p, g, rows);
  return cudaSuccess;
}

// dq_accum and grad_q are contiguous with rows of head_dim (a multiple of 8) elements, so the
// element count is a multiple of 4 and every 4-element vector is 16-byte (float) / 8-byte
// (16-bit) aligned.
template <ElementType kType>
cudaError_t launch_attention_backward_convert_dq(const AttentionParams& p, const BackwardBuffers& g,
                                                 cudaStream_t stream) {
  const int64_t vectors = static_cast<int64_t>(p.batch) * p.heads_q * p.len_q * p.head_dim / 4;
  attention_backward_convert_dq_kernel<kType><<<capped_blocks(vectors, kPreprocessThreads), kPreprocessThreads, 0,
                                                stream>>>(g.dq_accum, static_cast<element_t<kType>*>(g.grad_q),
                                                          vectors, p.scale);
  return cudaSuccess;
}

// Grid: one CTA per (key tile, kv head, batch); the host checks it fits gridDim.x.
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_backward(const AttentionParams& p, const BackwardBuffers& g, cudaStream_t stream) {
  static std::atomic<uint64_t> configured{0};
  constexpr size_t kShared = backward_shared_bytes(kHeadDim);
  const auto kernel = attention_backward_kernel<kType, kHeadDim>;
  const cudaError_t error = raise_shared_limit(kernel, kShared, configured);
  if (error != cudaSuccess) return error;
  constexpr int kBlockN = backward_tile(kHeadDim).block_n;
  const int64_t ctas = static_cast<int64_t>((p.len_k + kBlockN - 1) / kBlockN) * p.heads_kv * p.batch;
  kernel<<<static_cast<unsigned int>(ctas), backward_threads(kHeadDim), kShared, stream>>>(p, g);
  return cudaSuccess;
}

// Grid: one CTA per (query tile, head, batch); the host checks it fits gridDim.x.
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_backward_dq(const AttentionParams& p, const BackwardBuffers& g, cudaStream_t stream) {
  static std::atomic<uint64_t> configured{0};
  constexpr size_t kShared = backward_dq_shared_bytes(kHeadDim);
  const auto kernel = attention_backward_dq_kernel<kType, kHeadDim>;
  const cudaError_t error = raise_shared_limit(kernel, kShared, configured);
  if (error != cudaSuccess) return error;
  const int64_t ctas =
      static_cast<int64_t>((p.len_q + kBackwardDqBlockM - 1) / kBackwardDqBlockM) * p.heads_q * p.batch;
  kernel<<<static_cast<unsigned int>(ctas), kBackwardDqThreads, kShared, stream>>>(p, g);
  return cudaSuccess;
}

}  // namespace bigkern::cuda_attention
