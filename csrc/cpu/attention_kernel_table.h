// The CPU attention kernels as a table of functions, one table per instruction set
// (attention_kernels_avx2.cpp, attention_kernels_baseline.cpp); attention.cpp validates the
// arguments, describes them with the plain structs below and picks the table once, at run time.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace bigkern::cpu {

// A (B, H, L, E) tensor whose last dim is contiguous: element (b, h, i, e) lies at
// data[b * sb + h * sh + i * si + e] (strides in elements).
struct RowsView {
  const void* data = nullptr;
  int64_t sb = 0, sh = 0, si = 0;
};

// The (B, Hq, Lq, Lk) attention mask view, any strides (0 where it broadcasts). Its element type
// is bool, or the dtype of q when not `is_bool`. data == nullptr: no mask.
struct MaskView {
  const void* data = nullptr;
  bool is_bool = false;
  int64_t sb = 0, sh = 0, si = 0, sj = 0;
};

// Everything the forward and the backward share (csrc/schema/attention.cpp states the meaning).
struct AttentionProblem {
  c10::ScalarType dtype;
  int64_t batch, heads_q, heads_kv, len_q, len_k, dim_qk, dim_v;
  RowsView q, k, v;
  MaskView mask;
  int64_t causal;  // 0 none, 1 top-left, 2 bottom-right
  double scale;
  double dropout_p;
  int64_t seed;
  int64_t offset;
};

struct AttentionKernelTable {
  // out: contiguous (B, Hq, Lq, Dv) of p.dtype; lse: contiguous (B, Hq, Lq).
  void (*forward)(const AttentionProblem& p, void* out, float* lse);
  // grad_out and out: (B, Hq, Lq, Dv) views of p.dtype; lse: contiguous (B, Hq, Lq);
  // grad_q, grad_k, grad_v: contiguous, shaped and typed like q, k, v.
  void (*backward)(const AttentionProblem& p, const RowsView& grad_out, const RowsView& out, const float* lse,
                   void* grad_q, void* grad_k, void* grad_v);
};

namespace baseline {
const AttentionKernelTable& attention_kernels();
}
namespace avx2 {
const AttentionKernelTable& attention_kernels();
}

}  // namespace bigkern::cpu
