// Which scores survive, shared by the forward and the backward: key visibility (the key length
// and the causal rule, also at tile granularity so whole tiles can be skipped or taken without a
// per-element test), the attention mask, and the dropout decision.
//
// All positions are absolute (row = query index i, col = key index j of the (b, h) problem).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/philox.h"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

// Key length and the causal rule. Host-callable: the split planning and the CPU checks use it.
struct KeyVisibility {
  int32_t len_k;
  int32_t causal;
  int32_t causal_shift;

  __host__ __device__ static KeyVisibility of(const AttentionParams& p) {
    return {p.len_k, p.causal, p.causal_shift};
  }

  __host__ __device__ bool visible(int32_t row, int32_t col) const {
    return col < len_k && (causal == kCausalNone || col <= row + causal_shift);
  }

  // Keys [0, key_end) hold every key visible to some row <= last_row; the key tiles from
  // key_end on can be skipped for a tile of rows ending at last_row. 0 means none is visible.
  __host__ __device__ int32_t key_end(int32_t last_row) const {
    if (causal == kCausalNone) return len_k;
    const int64_t end = static_cast<int64_t>(last_row) + causal_shift + 1;
    return static_cast<int32_t>(end < 0 ? 0 : (end > len_k ? len_k : end));
  }

  // The first row that sees key col (rows before it can be skipped by the backward; may exceed
  // len_q, meaning no row sees it).
  __host__ __device__ int64_t first_row(int32_t col) const {
    if (causal == kCausalNone) return 0;
    const int64_t row = static_cast<int64_t>(col) - causal_shift;
    return row < 0 ? 0 : row;
  }

  // Whether every key in [col_begin, col_end) is visible to every row >= first_row, so a tile
  // needs no per-element visibility test (the attention mask aside).
  __host__ __device__ bool all_visible(int32_t first_row, int32_t col_end) const {
    if (col_end > len_k) return false;
    return causal == kCausalNone || static_cast<int64_t>(col_end) - 1 <= static_cast<int64_t>(first_row) + causal_shift;
  }
};

// attn_mask of one (b, h) problem, read one element at a time through its strides.
template <ElementType kType>
struct AttentionMask {
  MaskKind kind;
  const unsigned char* base;  // element (b, h, 0, 0); bool is one byte, additive is kType
  int64_t stride_row;         // in elements
  int64_t stride_col;

  __device__ static AttentionMask of(const AttentionParams& p, int32_t b, int32_t h) {
    const int64_t offset = b * p.mask_stride_batch + h * p.mask_stride_head;
    const int64_t element_bytes = p.mask_kind == MaskKind::kBool ? 1 : sizeof(element_t<kType>);
    return {p.mask_kind, static_cast<const unsigned char*>(p.mask) + offset * element_bytes, p.mask_stride_row,
            p.mask_stride_col};
  }

  __device__ bool present() const { return kind != MaskKind::kNone; }

  // The masked score (log2 units) of element (row, col), which must lie inside the Lq x Lk
  // problem: -inf where a bool mask forbids it, x + mask * log2(e) for an additive mask.
  __device__ float apply(float x, int32_t row, int32_t col) const {
    const int64_t offset = row * stride_row + col * stride_col;
    if (kind == MaskKind::kBool) return base[offset] ? x : -INFINITY;
    if (kind == MaskKind::kAdditive) {
      const auto* additive = reinterpret_cast<const element_t<kType>*>(base);
      return x + ElementTraits<kType>::to_float(additive[offset]) * kLog2e;
    }
    return x;
  }
};

// The score of element (row, col) in log2 units after causal/length visibility and the mask:
// -inf where the key is not visible. Rows at or beyond len_q (padding of the last query tile)
// get -inf too, so the mask is never read outside the problem.
template <ElementType kType>
__device__ __forceinline__ float masked_score(float x, int32_t row, int32_t col, int32_t len_q,
                                              const KeyVisibility& visibility, const AttentionMask<kType>& mask) {
  if (row >= len_q || !visibility.visible(row, col)) return -INFINITY;
  return mask.apply(x, row, col);
}

// The dropout decision of csrc/common/philox.h for one (b, h) problem.
struct DropoutGenerator {
  uint32_t threshold;
  uint32_t seed_lo;
  uint32_t seed_hi;
  uint32_t problem;  // b * Hq + h, the third counter word
  uint32_t offset;

  __host__ __device__ static DropoutGenerator of(const AttentionParams& p, int32_t b, int32_t h) {
    return {p.dropout_threshold, p.seed_lo, p.seed_hi, static_cast<uint32_t>(b * p.heads_q + h), p.philox_offset};
  }

  // Whether weights (row, col) and (row, col + 1) are kept, for an even col: both share the
  // Philox call of counter col >> 2 (words col & 3 and (col & 3) + 1), so one call serves the
  // pair an mma accumulator lane holds.
  __host__ __device__ void keep_pair(int32_t row, int32_t col, bool& keep_first, bool& keep_second) const {
    const Philox4 r = philox4x32_10(static_cast<uint32_t>(col) >> 2, static_cast<uint32_t>(row), problem, offset,
                                    seed_lo, seed_hi);
    // Constant indices only: a runtime index into r.x would put it in local memory.
    const bool upper = (col & 2) != 0;
    keep_first = (upper ? r.x[2] : r.x[0]) >= threshold;
    keep_second = (upper ? r.x[3] : r.x[1]) >= threshold;
  }

  __host__ __device__ bool keep(int32_t row, int32_t col) const {
    const Philox4 r = philox4x32_10(static_cast<uint32_t>(col) >> 2, static_cast<uint32_t>(row), problem, offset,
                                    seed_lo, seed_hi);
    const int word = col & 3;
    const uint32_t value = word == 0 ? r.x[0] : word == 1 ? r.x[1] : word == 2 ? r.x[2] : r.x[3];
    return value >= threshold;
  }
};

}  // namespace bigkern::cuda_attention
