// The two memory-bound passes around the attention backward's main kernel:
//   preprocess: Delta[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d] in float32 (the row term of
//     dS = P * (dP - Delta), FlashAttention-2's D_i), and zeroes the float32 dQ accumulator when
//     the atomic path uses one;
//   convert_dq: grad_q = scale * dq_accum, rounded to the input dtype.
// Both are grid-stride loops over rows or vectors with a capped grid (no launch depends on the
// problem size beyond that cap).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_params.h"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

constexpr int kPreprocessThreads = 256;
// Eight lanes share a row: a row of up to 256 elements is at most 32 16-byte vectors, so every
// lane reads 1..4 of them; the partial sums meet by three shuffles within the 8-lane group.
constexpr int kLanesPerRow = 8;
constexpr int kRowsPerBlock = kPreprocessThreads / kLanesPerRow;
// 2^16 blocks cover 2M rows per sweep; larger problems loop (gridDim.x must stay < 2^31).
constexpr int64_t kMaxPreprocessBlocks = int64_t{1} << 16;

template <ElementType kType>
__global__ void __launch_bounds__(kPreprocessThreads)
    attention_backward_preprocess_kernel(const AttentionParams p, const BackwardBuffers g, int64_t rows) {
  using T = element_t<kType>;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int sub = lane % kLanesPerRow;
  // The shuffles involve only this row's 8 lanes, which enter and leave the loop together.
  const unsigned row_lanes = 0xFFu << (lane & ~(kLanesPerRow - 1));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kLanesPerRow; row < rows;
       row += stride) {
    // row = (b * Hq + h) * Lq + i, the index of Delta and of lse.
    const int32_t i = static_cast<int32_t>(row % p.len_q);
    const int64_t problem = row / p.len_q;
    const int32_t h = static_cast<int32_t>(problem % p.heads_q);
    const int32_t b = static_cast<int32_t>(problem / p.heads_q);
    const T* d_out = static_cast<const T*>(g.grad_out) + b * g.grad_out_strides.batch + h * g.grad_out_strides.head +
                     i * g.grad_out_strides.row;
    const T* out = static_cast<const T*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.row;
    float sum = 0.f;
    for (int col = sub * 8; col < p.head_dim; col += kLanesPerRow * 8) {
      const uint4 d_out_vector = *reinterpret_cast<const uint4*>(d_out + col);
      const uint4 out_vector = *reinterpret_cast<const uint4*>(out + col);
      T d_out_values[8], out_values[8];
      __builtin_memcpy(d_out_values, &d_out_vector, sizeof(d_out_vector));
      __builtin_memcpy(out_values, &out_vector, sizeof(out_vector));
      BIGKERN_UNROLL
      for (int e = 0; e < 8; ++e) {
        sum += ElementTraits<kType>::to_float(d_out_values[e]) * ElementTraits<kType>::to_float(out_values[e]);
      }
    }
    sum += __shfl_xor_sync(row_lanes, sum, 1);
    sum += __shfl_xor_sync(row_lanes, sum, 2);
    sum += __shfl_xor_sync(row_lanes, sum, 4);
    if (sub == 0) g.delta[row] = sum;
    if (g.dq_accum != nullptr) {
      float* const dq = g.dq_accum + row * p.head_dim;
      for (int col = sub * 4; col < p.head_dim; col += kLanesPerRow * 4) {
        *reinterpret_cast<float4*>(dq + col) = make_float4(0.f, 0.f, 0.f, 0.f);
      }
    }
  }
}

template <ElementType kType>
__global__ void __launch_bounds__(kPreprocessThreads)
    attention_backward_convert_dq_kernel(const float* dq_accum, element_t<kType>* grad_q, int64_t vectors, float scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kPreprocessThreads;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * kPreprocessThreads + threadIdx.x; v < vectors; v += stride) {
    const float4 x = reinterpret_cast<const float4*>(dq_accum)[v];
    uint2 packed;
    packed.x = pack_pair<kType>(x.x * scale, x.y * scale);
    packed.y = pack_pair<kType>(x.z * scale, x.w * scale);
    reinterpret_cast<uint2*>(grad_q)[v] = packed;
  }
}

}  // namespace bigkern::cuda_attention
