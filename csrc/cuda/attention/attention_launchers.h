// The launchers of the attention kernel instances. Each is a template defined in a kernel
// header (forward_kernel.cuh, splitkv_kernel.cuh) and explicitly instantiated, once per
// (dtype, head-dim bucket), by a generated file in instances/ (generate_instances.py);
// attention.cpp includes only this header and links against those instantiations.
//
// A launcher enqueues its kernel on `stream`. It returns the error of raising the kernel's
// shared-memory limit (cudaSuccess otherwise); the caller checks it, and then the launch itself
// with C10_CUDA_KERNEL_LAUNCH_CHECK().
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/attention/attention_params.h"

namespace bigkern::cuda_attention {

// The split-KV forward's float32 scratch, allocated by the host for one call:
//   partial_out (num_splits, B, Hq, Lq, head_dim), partial_lse (num_splits, B, Hq, Lq);
// chunk s covers keys [s * keys_per_split, (s + 1) * keys_per_split) ∩ [0, Lk).
struct SplitKvWorkspace {
  float* partial_out;
  float* partial_lse;  // natural log; -inf for a chunk in which the row sees no key
  int32_t num_splits;
  int32_t keys_per_split;
};

// out and lse of p from q, k, v (the whole key range per CTA).
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_forward(const AttentionParams& p, cudaStream_t stream);

// The partial results of every key chunk into `split`.
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_forward_splitkv(const AttentionParams& p, const SplitKvWorkspace& split,
                                             cudaStream_t stream);

// Merges the partial results of `split` into out and lse of p.
template <ElementType kType>
cudaError_t launch_attention_splitkv_combine(const AttentionParams& p, const SplitKvWorkspace& split,
                                             cudaStream_t stream);

}  // namespace bigkern::cuda_attention
