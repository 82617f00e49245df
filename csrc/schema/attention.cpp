// Schemas of the fused attention ops; the contract every kernel (CPU, CUDA, Triton) keeps.
//
// attention_forward(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset) -> (out, lse)
//   q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, Dv); any strides, but the last dim of
//   q, k, v is contiguous (stride 1; bigkern/ops/attention.py guarantees it). Hq % Hkv == 0:
//   query head h reads key/value head h / (Hq / Hkv) (grouped-query attention, no copy of K/V).
//   attn_mask: None, or a (B, Hq, Lq, Lk) view of dtype bool or q.dtype with any strides,
//   broadcast dims having stride 0 (a key padding mask or an (Lq, Lk) mask is read in place).
//   bool: true = the query may attend to the key; float: added to the scaled score.
//   causal: 0 none; 1 top-left aligned (key j visible to query i iff j <= i, SDPA's is_causal);
//   2 bottom-right aligned (iff j <= i + Lk - Lq, FlashAttention's convention for KV caches).
//   causal and attn_mask may both be given: a key must pass both.
//   scale multiplies q.k before the mask is added.
//   dropout_p in [0, 1): each weight of the softmax is dropped by the counter-based generator of
//   csrc/common/philox.h (keyed by seed, counter (j / 4, i, b * Hq + h, offset)), kept ones are
//   scaled by 1 / (1 - dropout_p). dropout_p == 0 never evaluates the generator.
//   out (B, Hq, Lq, Dv), contiguous, q.dtype.
//   lse (B, Hq, Lq), contiguous, float32: natural-log sum of exp of the scaled, masked scores of
//   the row (before dropout); +inf for a row in which no key is visible, whose out row is zero.
//
// attention_backward(grad_out, q, k, v, out, lse, attn_mask, dropout_p, causal, scale, seed,
//                    offset, deterministic) -> (grad_q, grad_k, grad_v)
//   The FlashAttention-2 backward: recomputes P = exp(scale * q.k + mask - lse) tile by tile,
//   never an Lq x Lk matrix in memory. Gradients are contiguous, shaped and typed like q, k, v;
//   grad_k / grad_v sum over the query heads sharing a key/value head. Rows with lse = +inf
//   contribute nothing. deterministic=true: no atomics, bitwise reproducible run to run.
//   grad_out has a contiguous last dim (the op layer guarantees it).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "schema/schemas.h"

namespace bigkern {

void define_attention_ops(torch::Library& m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float dropout_p, int causal, "
      "float scale, int seed, int offset) -> (Tensor out, Tensor lse)",
      tags);
  m.def(
      "attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? attn_mask, float dropout_p, int causal, float scale, int seed, int offset, "
      "bool deterministic) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)",
      tags);
}

}  // namespace bigkern
