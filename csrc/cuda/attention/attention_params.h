// Kernel parameters of the CUDA attention kernels (forward, split-KV decode, backward).
//
// Plain data only: this header is included by the host code (attention.cpp, compiled by the C++
// compiler) and by the kernels (compiled by nvcc), so it names no CUDA or ATen type. The host
// fills one AttentionParams per call from the tensors of the schema (csrc/schema/attention.cpp
// states the contract); the kernels read it by value from kernel-parameter space.
//
// Conventions:
// - Tensors are (B, H, L, D) with any strides but a contiguous last dim; strides are in elements.
// - Lengths and head counts fit int32 (attention.cpp checks); element offsets are int64.
// - Scores are handled in log2 units: x = (q.k) * scale_log2 + mask * log2(e), so that the
//   softmax needs exp2 only. lse is stored in natural log (the contract's unit).
#pragma once
#include <cstdint>

namespace bigkern::cuda_attention {

// The element type of q, k, v and out; the kernels map it onto __half / __nv_bfloat16
// (sm80_primitives.cuh), the host onto at::kHalf / at::kBFloat16.
enum class ElementType : int32_t { kFloat16 = 0, kBFloat16 = 1 };

// attn_mask: absent, bool (true = may attend), or additive in q's dtype.
enum class MaskKind : int32_t { kNone = 0, kBool = 1, kAdditive = 2 };

// The schema's causal argument.
constexpr int kCausalNone = 0;
constexpr int kCausalTopLeft = 1;      // key j visible to query i iff j <= i
constexpr int kCausalBottomRight = 2;  // iff j <= i + Lk - Lq

// Element strides of a (B, H, L, D) tensor whose last dim is contiguous.
struct TensorStrides {
  int64_t batch;
  int64_t head;
  int64_t row;
};

struct AttentionParams {
  // Inputs. k and v have heads_kv heads; query head h reads key/value head h / kv_group.
  const void* q;
  const void* k;
  const void* v;
  TensorStrides q_strides;
  TensorStrides k_strides;
  TensorStrides v_strides;

  // out (B, Hq, Lq, D) in q's dtype and lse (B, Hq, Lq) float32, both contiguous. The forward
  // writes them; the backward reads them.
  void* out;
  TensorStrides out_strides;
  float* lse;

  int32_t batch;
  int32_t heads_q;
  int32_t heads_kv;
  int32_t kv_group;  // heads_q / heads_kv
  int32_t len_q;
  int32_t len_k;
  int32_t head_dim;  // D == Dv; a multiple of 8, at most the instance's head-dim bucket

  float scale;       // multiplies q.k (natural units)
  float scale_log2;  // scale * log2(e)

  // Causal visibility: when causal != kCausalNone, key j is visible to query i iff
  // j <= i + causal_shift (0 for top-left, len_k - len_q for bottom-right).
  int32_t causal;
  int32_t causal_shift;

  // attn_mask viewed as (B, Hq, Lq, Lk) with element strides (0 where it broadcasts). Unaligned
  // and arbitrary strides are fine: the kernels read it one element at a time.
  MaskKind mask_kind;
  const void* mask;
  int64_t mask_stride_batch;
  int64_t mask_stride_head;
  int64_t mask_stride_row;
  int64_t mask_stride_col;

  // Dropout on the softmax weights (csrc/common/philox.h). When has_dropout is false the
  // generator is never evaluated.
  bool has_dropout;
  uint32_t dropout_threshold;  // dropped iff r < threshold
  float dropout_rescale;       // 1 / (1 - dropout_p), applied to kept weights
  uint32_t seed_lo;            // Philox key
  uint32_t seed_hi;
  uint32_t philox_offset;      // fourth counter word
};

}  // namespace bigkern::cuda_attention
