// The buffers of the attention backward beyond AttentionParams. Plain data, shared by the host
// (attention_backward.cpp) and the kernels.
#pragma once
#include <cstdint>

#include "cuda/attention/attention_params.h"

namespace bigkern::cuda_attention {

// What the backward reads and writes beyond AttentionParams (which holds q, k, v, out, lse).
struct BackwardBuffers {
  const void* grad_out;  // (B, Hq, Lq, D), q's dtype, 16-byte aligned rows
  TensorStrides grad_out_strides;
  float* delta;     // (B, Hq, Lq) workspace: Delta = rowsum(dO * O)
  float* dq_accum;  // (B, Hq, Lq, D) float32 workspace for atomically added dQ; nullptr when
                    // deterministic (then the dQ kernel writes grad_q)
  void* grad_q;     // (B, Hq, Lq, D) contiguous, q's dtype
  void* grad_k;     // (B, Hkv, Lk, D) contiguous
  void* grad_v;     // (B, Hkv, Lk, D) contiguous
};

}  // namespace bigkern::cuda_attention
