// The split-KV forward for decoding: when batch * heads * query tiles would leave SMs idle
// (splitkv_plan.h), the keys are cut into chunks, each chunk's CTA runs the forward kernel on its
// keys only (forward_kernel.cuh with kSplitKv) and writes a normalised partial output O_s and
// partial log-sum-exp lse_s; the combine kernel here merges them:
//   lse = log(sum_s exp(lse_s)),  out = sum_s exp(lse_s - lse) * O_s.
// Exact in real arithmetic: O_s = sum_{j in s} w_j v_j / l_s with l_s = exp(lse_s), so the
// weights exp(lse_s - lse) = l_s / l restore the global normalisation (dropout included, as the
// kept weights and their 1 / (1 - p) are already inside O_s). Chunks in which a row sees no key
// have lse_s = -inf and weight 0; a row with no visible key at all gets out 0 and lse +inf.
// (Kernel only; the launchers are in forward_launch.cuh.)
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention_launchers.h"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

constexpr int kCombineWarps = 4;

__device__ __forceinline__ float warp_max(float x) {
  BIGKERN_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  BIGKERN_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// One warp per output row (b, h, i), rows numbered (b * Hq + h) * Lq + i like out and lse,
// which the host allocates contiguous. Lanes stride over chunks for the lse and over columns
// for the output (coalesced float reads of each chunk's row).
template <ElementType kType>
__global__ void __launch_bounds__(kCombineWarps * 32)
    attention_splitkv_combine_kernel(const AttentionParams p, const SplitKvWorkspace split) {
  using T = element_t<kType>;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads_q * p.len_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kCombineWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = static_cast<int>(threadIdx.x) % 32;

  float max_lse = -INFINITY;
  for (int s = lane; s < split.num_splits; s += 32) max_lse = fmaxf(max_lse, split.partial_lse[s * rows + row]);
  max_lse = warp_max(max_lse);

  T* const out = static_cast<T*>(p.out) + row * p.head_dim;
  if (max_lse == -INFINITY) {
    for (int col = lane; col < p.head_dim; col += 32) out[col] = ElementTraits<kType>::from_float(0.f);
    if (lane == 0) p.lse[row] = INFINITY;
    return;
  }
  float total = 0.f;
  for (int s = lane; s < split.num_splits; s += 32) total += expf(split.partial_lse[s * rows + row] - max_lse);
  const float lse = max_lse + logf(warp_sum(total));

  for (int col = lane; col < p.head_dim; col += 32) {
    float value = 0.f;
    for (int s = 0; s < split.num_splits; ++s) {
      const float weight = expf(split.partial_lse[s * rows + row] - lse);
      value += weight * split.partial_out[(s * rows + row) * p.head_dim + col];
    }
    out[col] = ElementTraits<kType>::from_float(value);
  }
  if (lane == 0) p.lse[row] = lse;
}

}  // namespace bigkern::cuda_attention
