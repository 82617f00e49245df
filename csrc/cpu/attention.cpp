// CPU implementations of the fused attention ops (schemas and contract in csrc/schema/attention.cpp).
//
// Each op validates its arguments (shapes, dtypes, mask, causal mode, dropout probability),
// describes the tensors to the kernels as plain views (strides read in place: no copy of q, k,
// v or the mask, only of an operand whose last dim is not contiguous, which the op layer never
// passes), allocates contiguous outputs, and calls the kernel table of the best instruction set
// this processor supports (attention_kernels.h explains the kernels).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "cpu/isa.h"
#include "cpu/attention_kernel_table.h"

namespace bigkern::cpu {
namespace {

// The kernel table of the best instruction set this processor supports (cpu/isa.h).
const AttentionKernelTable& kernels() {
  static const AttentionKernelTable& table = use_avx2_kernels() ? avx2::attention_kernels() : baseline::attention_kernels();
  return table;
}

bool is_kernel_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The kernels read rows in place; an operand whose last dim is strided is copied once.
at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return t.stride(-1) == 1 || t.size(-1) <= 1 ? t : t.contiguous();
}

RowsView rows_view(const at::Tensor& t) { return {t.const_data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }

void check_operand(const at::Tensor& t, const char* name, const at::Tensor& q, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but q has dtype ", q.scalar_type(), "; they must match");
}

// Validates q, k, v, the mask and the scalars, and describes them for the kernels. The tensors
// the views point into are returned through `keep` (copies made for strided last dims).
AttentionProblem describe(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                          const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal, double scale,
                          int64_t seed, int64_t offset, const char* op, at::Tensor (&keep)[3]) {
  TORCH_CHECK(q_in.dim() == 4, op, ": q must be 4-D (B, Hq, Lq, D), got shape ", q_in.sizes());
  TORCH_CHECK(is_kernel_dtype(q_in.scalar_type()), op, ": q has dtype ", q_in.scalar_type(),
              "; expected float32, float64, float16 or bfloat16");
  check_operand(q_in, "q", q_in, op);
  check_operand(k_in, "k", q_in, op);
  check_operand(v_in, "v", q_in, op);
  const int64_t B = q_in.size(0), Hq = q_in.size(1), Lq = q_in.size(2), D = q_in.size(3);
  const int64_t Hkv = k_in.size(1), Lk = k_in.size(2), Dv = v_in.size(3);
  TORCH_CHECK(k_in.size(0) == B && k_in.size(3) == D, op, ": k must be (B, Hkv, Lk, D) = (", B, ", Hkv, Lk, ", D,
              ") to match q of shape ", q_in.sizes(), ", got ", k_in.sizes());
  TORCH_CHECK(v_in.size(0) == B && v_in.size(1) == Hkv && v_in.size(2) == Lk, op, ": v must be (B, Hkv, Lk, Dv) = (",
              B, ", ", Hkv, ", ", Lk, ", Dv) to match k of shape ", k_in.sizes(), ", got ", v_in.sizes());
  TORCH_CHECK((Hkv > 0 && Hq % Hkv == 0) || (Hkv == 0 && Hq == 0), op, ": the query heads (", Hq,
              ") must be a multiple of the key/value heads (", Hkv, ")");
  TORCH_CHECK(causal >= 0 && causal <= 2, op, ": causal must be 0 (none), 1 (top-left) or 2 (bottom-right), got ",
              causal);
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, op, ": dropout_p must be in [0, 1), got ", dropout_p);
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);

  keep[0] = last_dim_contiguous(q_in);
  keep[1] = last_dim_contiguous(k_in);
  keep[2] = last_dim_contiguous(v_in);
  AttentionProblem p{};
  p.dtype = q_in.scalar_type();
  p.batch = B;
  p.heads_q = Hq;
  p.heads_kv = Hkv;
  p.len_q = Lq;
  p.len_k = Lk;
  p.dim_qk = D;
  p.dim_v = Dv;
  p.q = rows_view(keep[0]);
  p.k = rows_view(keep[1]);
  p.v = rows_view(keep[2]);
  p.causal = causal;
  p.scale = scale;
  p.dropout_p = dropout_p;
  p.seed = seed;
  p.offset = offset;
  if (attn_mask.has_value()) {
    const at::Tensor& m = *attn_mask;
    TORCH_CHECK(m.device().is_cpu(), op, ": attn_mask must be a CPU tensor, got one on ", m.device());
    TORCH_CHECK(m.scalar_type() == at::kBool || m.scalar_type() == q_in.scalar_type(), op, ": attn_mask has dtype ",
                m.scalar_type(), "; expected bool or q's dtype ", q_in.scalar_type());
    TORCH_CHECK(m.dim() == 4 && m.size(0) == B && m.size(1) == Hq && m.size(2) == Lq && m.size(3) == Lk, op,
                ": attn_mask must be a (B, Hq, Lq, Lk) = (", B, ", ", Hq, ", ", Lq, ", ", Lk,
                ") view (stride 0 where it broadcasts), got shape ", m.sizes());
    p.mask = {m.const_data_ptr(), m.scalar_type() == at::kBool, m.stride(0), m.stride(1), m.stride(2), m.stride(3)};
  }
  return p;
}

void check_like(const at::Tensor& t, const char* name, at::IntArrayRef sizes, at::ScalarType dtype, const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.sizes() == sizes, op, ": ", name, " must have shape ", sizes, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " has dtype ", t.scalar_type(), "; expected ", dtype);
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const std::optional<at::Tensor>& attn_mask, double dropout_p,
                                                     int64_t causal, double scale, int64_t seed, int64_t offset) {
  at::Tensor keep[3];
  const AttentionProblem p =
      describe(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset, "bigkern::attention_forward", keep);
  at::Tensor out = at::empty({p.batch, p.heads_q, p.len_q, p.dim_v}, q.options());
  at::Tensor lse = at::empty({p.batch, p.heads_q, p.len_q}, q.options().dtype(at::kFloat));
  if (lse.numel() > 0) kernels().forward(p, out.mutable_data_ptr(), lse.mutable_data_ptr<float>());
  return {out, lse};
}

// `deterministic` is accepted for the contract's sake: the CPU backward has no atomics and is
// bitwise reproducible whatever it says (attention_kernels.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal, double scale,
    int64_t seed, int64_t offset, bool /*deterministic*/) {
  const char* op = "bigkern::attention_backward";
  at::Tensor keep[3];
  const AttentionProblem p = describe(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset, op, keep);
  const std::vector<int64_t> out_shape = {p.batch, p.heads_q, p.len_q, p.dim_v};
  check_like(grad_out, "grad_out", out_shape, p.dtype, op);
  check_like(out, "out", out_shape, p.dtype, op);
  check_like(lse, "lse", {p.batch, p.heads_q, p.len_q}, at::kFloat, op);
  at::Tensor grad_q = at::empty(q.sizes(), q.options());
  at::Tensor grad_k = at::empty(k.sizes(), k.options());
  at::Tensor grad_v = at::empty(v.sizes(), v.options());
  if (p.batch == 0 || p.heads_kv == 0) return {grad_q, grad_k, grad_v};
  const at::Tensor grad_out_rows = last_dim_contiguous(grad_out), out_rows = last_dim_contiguous(out);
  const at::Tensor lse_contiguous = lse.contiguous();
  kernels().backward(p, rows_view(grad_out_rows), rows_view(out_rows), lse_contiguous.const_data_ptr<float>(),
                     grad_q.mutable_data_ptr(), grad_k.mutable_data_ptr(), grad_v.mutable_data_ptr());
  return {grad_q, grad_k, grad_v};
}

}  // namespace
}  // namespace bigkern::cpu

TORCH_LIBRARY_IMPL(bigkern, CPU, m) {
  m.impl("attention_forward", &bigkern::cpu::attention_forward);
  m.impl("attention_backward", &bigkern::cpu::attention_backward);
}
