// CPU implementations of the recurrent ops (schemas and contract: csrc/schema/rnn.cpp).
//
// Each op checks its arguments, makes its tensors contiguous, allocates the outputs, and calls
// the kernel table of the best instruction set this processor supports (cpu/rnn_kernels.h: the
// recurrence and the gate math). The backward's products over all rows (the weight gradients,
// and for the cells the input and state gradients) are single GEMMs through ATen.
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "cpu/isa.h"
#include "cpu/rnn_kernel_table.h"

namespace bigkern::cpu {
namespace {

const RnnKernelTable& kernels() {
  static const RnnKernelTable& table = use_avx2_kernels() ? avx2::rnn_kernels() : baseline::rnn_kernels();
  return table;
}

int64_t gates_of(int64_t mode, const char* op) {
  TORCH_CHECK(mode >= 0 && mode <= 3, op, ": mode must be 0 (LSTM), 1 (GRU), 2 (RNN tanh) or 3 (RNN relu), got ", mode);
  return mode == 0 ? 4 : mode == 1 ? 3 : 1;
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_tensor(const at::Tensor& t, const char* name, const at::Tensor& like, std::vector<int64_t> shape,
                  const char* op) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but expected ",
              like.scalar_type());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), op, ": ", name, " has shape ", t.sizes(), "; expected ",
              at::IntArrayRef(shape));
}

void check_dtype(const at::Tensor& t, const char* op) {
  const auto d = t.scalar_type();
  TORCH_CHECK(d == at::kFloat || d == at::kBFloat16 || d == at::kDouble, op,
              ": the CPU recurrent kernels take float32, bfloat16 or float64, got ", d);
}

int64_t workspace_width(int64_t mode, int64_t hidden, bool projecting) {
  return mode == 0 ? (projecting ? 6 : 5) * hidden : mode == 1 ? 4 * hidden : hidden;
}

const void* ptr_or_null(const std::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

struct LayerArgs {
  RnnProblem p;
  at::Tensor x_proj, hx, w_hh;
  std::optional<at::Tensor> cx, b_hh, w_hr;
  std::vector<int64_t> batch_sizes;
  int64_t rows;
};

LayerArgs layer_args(int64_t mode, const at::Tensor* x_proj_in, const at::Tensor& batch_sizes, const at::Tensor& hx_in,
                     const std::optional<at::Tensor>& cx_in, const at::Tensor& w_hh_in,
                     const std::optional<at::Tensor>& b_hh_in, const std::optional<at::Tensor>& w_hr_in, bool reverse,
                     const char* op) {
  const int64_t G = gates_of(mode, op);
  LayerArgs a;
  check_dtype(hx_in, op);
  TORCH_CHECK(hx_in.dim() == 2, op, ": hx must be 2-D (batch, hidden), got shape ", hx_in.sizes());
  TORCH_CHECK(w_hh_in.dim() == 2 && w_hh_in.size(0) % G == 0 && w_hh_in.size(0) > 0, op, ": w_hh must be (", G,
              " * hidden, out_size), got shape ", w_hh_in.sizes());
  const int64_t B = hx_in.size(0), H = w_hh_in.size(0) / G, P = hx_in.size(1);
  TORCH_CHECK(!w_hr_in.has_value() || mode == 0, op, ": w_hr (a projection) is an LSTM option, got mode ", mode);
  check_tensor(w_hh_in, "w_hh", hx_in, {G * H, P}, op);
  if (w_hr_in.has_value()) {
    check_tensor(*w_hr_in, "w_hr", hx_in, {P, H}, op);
  } else {
    TORCH_CHECK(P == H, op, ": hx has ", P, " columns but the hidden size is ", H, " (and no projection w_hr)");
  }
  TORCH_CHECK(mode != 0 || cx_in.has_value(), op, ": the LSTM needs cx");
  if (mode == 0) check_tensor(*cx_in, "cx", hx_in, {B, H}, op);
  if (b_hh_in.has_value()) check_tensor(*b_hh_in, "b_hh", hx_in, {G * H}, op);
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong && batch_sizes.dim() == 1, op,
              ": batch_sizes must be a 1-D int64 CPU tensor, got ", batch_sizes.scalar_type(), " on ",
              batch_sizes.device(), " of shape ", batch_sizes.sizes());
  const at::Tensor sizes = batch_sizes.contiguous();
  a.batch_sizes.assign(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + sizes.numel());
  int64_t total = 0, previous = B;
  for (size_t t = 0; t < a.batch_sizes.size(); ++t) {
    const int64_t s = a.batch_sizes[t];
    TORCH_CHECK(s >= 1 && s <= previous && (t > 0 || s == B), op, ": batch_sizes must be non-increasing, start at the batch ",
                B, " and stay >= 1; got ", s, " at step ", t);
    previous = s;
    total += s;
  }
  if (x_proj_in != nullptr) {  // the backward does not need it
    check_tensor(*x_proj_in, "x_proj", hx_in, {total, G * H}, op);
    a.x_proj = x_proj_in->contiguous();
  }
  a.hx = hx_in.contiguous();
  a.w_hh = w_hh_in.contiguous();
  a.cx = contiguous(cx_in);
  a.b_hh = contiguous(b_hh_in);
  a.w_hr = contiguous(w_hr_in);
  a.rows = total;
  a.p = RnnProblem{hx_in.scalar_type(), mode, B, H, P, 0, static_cast<int64_t>(a.batch_sizes.size())};
  a.p.batch_sizes = a.batch_sizes.data();
  a.p.reverse = reverse;
  a.p.x_proj = a.x_proj.defined() ? a.x_proj.data_ptr() : nullptr;
  a.p.hx = a.hx.data_ptr();
  a.p.cx = ptr_or_null(a.cx);
  a.p.w_hh = a.w_hh.data_ptr();
  a.p.b_hh = ptr_or_null(a.b_hh);
  a.p.w_hr = ptr_or_null(a.w_hr);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_forward(
    int64_t mode, const at::Tensor& x_proj, const at::Tensor& batch_sizes, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, bool reverse, bool save_workspace) {
  LayerArgs a = layer_args(mode, &x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, "bigkern::rnn_layer_forward");
  const auto& p = a.p;
  at::Tensor output = at::empty({a.rows, p.out_size}, hx.options());
  at::Tensor hy = at::empty({p.batch, p.out_size}, hx.options());
  at::Tensor cy = at::empty(mode == 0 ? std::vector<int64_t>{p.batch, p.hidden} : std::vector<int64_t>{0}, hx.options());
  at::Tensor workspace =
      save_workspace ? at::empty({a.rows, workspace_width(mode, p.hidden, w_hr.has_value())}, hx.options().dtype(acc_type(hx.scalar_type())))
                     : at::empty({0}, hx.options().dtype(acc_type(hx.scalar_type())));
  kernels().layer_forward(p, RnnForwardOut{output.data_ptr(), hy.data_ptr(), mode == 0 ? cy.data_ptr() : nullptr,
                                           save_workspace ? workspace.data_ptr() : nullptr});
  return {output, hy, cy, workspace};
}

// Row r of the result is the state each (step, sequence) row started from: the sequence's row
// in the previously visited step, or its initial state; as indices into cat([hx, output]).
at::Tensor previous_state_index(const LayerArgs& a) {
  const int64_t B = a.p.batch, T = a.p.steps;
  std::vector<int64_t> offsets(T);
  int64_t total = 0;
  for (int64_t t = 0; t < T; ++t) {
    offsets[t] = total;
    total += a.batch_sizes[t];
  }
  at::Tensor index = at::empty({a.rows}, at::TensorOptions().dtype(at::kLong));
  int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t prev_t = a.p.reverse ? t + 1 : t - 1;
    for (int64_t b = 0; b < a.batch_sizes[t]; ++b) {
      const bool live_before = prev_t >= 0 && prev_t < T && a.batch_sizes[prev_t] > b;
      idx[offsets[t] + b] = live_before ? B + offsets[prev_t] + b : b;
    }
  }
  return index;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_backward(
    int64_t mode, const at::Tensor& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& batch_sizes, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, const at::Tensor& output, const at::Tensor& workspace, bool reverse) {
  const char* op = "bigkern::rnn_layer_backward";
  const int64_t G = gates_of(mode, op);
  LayerArgs a = layer_args(mode, nullptr, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, op);
  const auto& p = a.p;
  const at::ScalarType acc = acc_type(hx.scalar_type());
  check_tensor(grad_output, "grad_output", hx, {a.rows, p.out_size}, op);
  check_tensor(output, "output", hx, {a.rows, p.out_size}, op);
  TORCH_CHECK(workspace.scalar_type() == acc && workspace.dim() == 2 && workspace.size(0) == a.rows &&
                  workspace.size(1) == workspace_width(mode, p.hidden, w_hr.has_value()),
              op, ": workspace must be the forward's (", a.rows, ", ", workspace_width(mode, p.hidden, w_hr.has_value()),
              ") ", acc, " workspace, got ", workspace.scalar_type(), " of shape ", workspace.sizes());
  std::optional<at::Tensor> g_hy = contiguous(grad_hy), g_cy = contiguous(grad_cy);
  if (g_hy) check_tensor(*g_hy, "grad_hy", hx, {p.batch, p.out_size}, op);
  if (g_cy && mode == 0) check_tensor(*g_cy, "grad_cy", hx, {p.batch, p.hidden}, op);
  const at::Tensor go = grad_output.contiguous(), out = output.contiguous(), ws = workspace.contiguous();

  at::Tensor grad_x = at::empty({a.rows, G * p.hidden}, hx.options());
  // 24 spare rows: the kernel's register tiles read whole tiles past a step's last row.
  at::Tensor d_rec = at::zeros({a.rows + 24, G * p.hidden}, hx.options().dtype(acc));
  at::Tensor grad_hx = at::empty({p.batch, p.out_size}, hx.options());
  at::Tensor grad_cx = at::empty(mode == 0 ? std::vector<int64_t>{p.batch, p.hidden} : std::vector<int64_t>{0}, hx.options());
  at::Tensor dh_rows = at::empty(w_hr.has_value() ? std::vector<int64_t>{a.rows, p.out_size} : std::vector<int64_t>{0},
                                 hx.options().dtype(acc));
  kernels().layer_backward(
      p, RnnBackwardIn{go.data_ptr(), g_hy ? g_hy->data_ptr() : nullptr, mode == 0 && g_cy ? g_cy->data_ptr() : nullptr,
                       out.data_ptr(), ws.data_ptr()},
      RnnBackwardOut{grad_x.data_ptr(), d_rec.data_ptr(), grad_hx.data_ptr(), mode == 0 ? grad_cx.data_ptr() : nullptr,
                     w_hr.has_value() ? dh_rows.data_ptr() : nullptr});

  const at::Tensor d_gates = d_rec.narrow(0, 0, a.rows);
  const at::Tensor h_prev = at::index_select(at::cat({a.hx, out}).to(acc), 0, previous_state_index(a));
  at::Tensor grad_w_hh = at::mm(d_gates.t(), h_prev).to(hx.scalar_type());
  at::Tensor grad_b_hh = b_hh.has_value() ? d_gates.sum(0).to(hx.scalar_type()) : at::empty({0}, hx.options());
  at::Tensor grad_w_hr = at::empty({0}, hx.options());
  if (w_hr.has_value()) {
    const at::Tensor h_raw = ws.narrow(1, 5 * p.hidden, p.hidden);
    grad_w_hr = at::mm(dh_rows.t(), h_raw).to(hx.scalar_type());
  }
  return {grad_x, grad_hx, grad_cx, grad_w_hh, grad_b_hh, grad_w_hr};
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

struct CellArgs {
  RnnProblem p;
  at::Tensor input, hx, w_ih, w_hh;
  std::optional<at::Tensor> cx, b_ih, b_hh;
};

CellArgs cell_args(int64_t mode, const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                   const std::optional<at::Tensor>& b_hh, const char* op) {
  const int64_t G = gates_of(mode, op);
  check_dtype(input, op);
  TORCH_CHECK(input.dim() == 2, op, ": input must be 2-D (batch, input_size), got shape ", input.sizes());
  TORCH_CHECK(hx.dim() == 2, op, ": hx must be 2-D (batch, hidden), got shape ", hx.sizes());
  const int64_t B = input.size(0), I = input.size(1), H = hx.size(1);
  check_tensor(hx, "hx", input, {B, H}, op);
  check_tensor(w_ih, "w_ih", input, {G * H, I}, op);
  check_tensor(w_hh, "w_hh", input, {G * H, H}, op);
  TORCH_CHECK(mode != 0 || cx.has_value(), op, ": the LSTM cell needs cx");
  if (mode == 0) check_tensor(*cx, "cx", input, {B, H}, op);
  TORCH_CHECK(b_ih.has_value() == b_hh.has_value(), op, ": pass both b_ih and b_hh or neither");
  if (b_ih) {
    check_tensor(*b_ih, "b_ih", input, {G * H}, op);
    check_tensor(*b_hh, "b_hh", input, {G * H}, op);
  }
  CellArgs a;
  a.input = input.contiguous();
  a.hx = hx.contiguous();
  a.w_ih = w_ih.contiguous();
  a.w_hh = w_hh.contiguous();
  a.cx = contiguous(mode == 0 ? cx : std::nullopt);
  a.b_ih = contiguous(b_ih);
  a.b_hh = contiguous(b_hh);
  a.p = RnnProblem{input.scalar_type(), mode, B, H, H, I, 1};
  a.p.input = a.input.data_ptr();
  a.p.hx = a.hx.data_ptr();
  a.p.cx = ptr_or_null(a.cx);
  a.p.w_ih = a.w_ih.data_ptr();
  a.p.w_hh = a.w_hh.data_ptr();
  a.p.b_ih = ptr_or_null(a.b_ih);
  a.p.b_hh = ptr_or_null(a.b_hh);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_cell_forward(int64_t mode, const at::Tensor& input,
                                                                const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                                                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                                const std::optional<at::Tensor>& b_ih,
                                                                const std::optional<at::Tensor>& b_hh, bool save_workspace) {
  CellArgs a = cell_args(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, "bigkern::rnn_cell_forward");
  const auto& p = a.p;
  const at::ScalarType acc = acc_type(input.scalar_type());
  at::Tensor hy = at::empty({p.batch, p.hidden}, input.options());
  at::Tensor cy = at::empty(mode == 0 ? std::vector<int64_t>{p.batch, p.hidden} : std::vector<int64_t>{0}, input.options());
  at::Tensor workspace = save_workspace ? at::empty({p.batch, workspace_width(mode, p.hidden, false)}, input.options().dtype(acc))
                                        : at::empty({0}, input.options().dtype(acc));
  if (p.batch > 0) {
    kernels().cell_forward(p, RnnForwardOut{hy.data_ptr(), nullptr, mode == 0 ? cy.data_ptr() : nullptr,
                                            save_workspace ? workspace.data_ptr() : nullptr});
  }
  return {hy, cy, workspace};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cell_backward(
    int64_t mode, const at::Tensor& grad_hy, const std::optional<at::Tensor>& grad_cy, const at::Tensor& input,
    const at::Tensor& hx, const std::optional<at::Tensor>& cx, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& workspace, bool has_bias) {
  const char* op = "bigkern::rnn_cell_backward";
  CellArgs a = cell_args(mode, input, hx, cx, w_ih, w_hh, std::nullopt, std::nullopt, op);
  const auto& p = a.p;
  const int64_t G = gates_of(mode, op);
  const at::ScalarType acc = acc_type(input.scalar_type()), dtype = input.scalar_type();
  check_tensor(grad_hy, "grad_hy", input, {p.batch, p.hidden}, op);
  std::optional<at::Tensor> g_cy = contiguous(mode == 0 ? grad_cy : std::nullopt);
  if (g_cy) check_tensor(*g_cy, "grad_cy", input, {p.batch, p.hidden}, op);
  TORCH_CHECK(workspace.scalar_type() == acc && workspace.dim() == 2 && workspace.size(0) == p.batch &&
                  workspace.size(1) == workspace_width(mode, p.hidden, false),
              op, ": workspace must be the forward's (", p.batch, ", ", workspace_width(mode, p.hidden, false), ") ", acc,
              " workspace, got ", workspace.scalar_type(), " of shape ", workspace.sizes());
  const at::Tensor gh = grad_hy.contiguous(), ws = workspace.contiguous();
  at::Tensor d_x = at::empty({p.batch, G * p.hidden}, input.options());
  at::Tensor d_rec = at::empty({p.batch, G * p.hidden}, input.options().dtype(acc));
  at::Tensor direct = at::empty({p.batch, p.hidden}, input.options().dtype(acc));
  at::Tensor grad_cx = at::empty(mode == 0 ? std::vector<int64_t>{p.batch, p.hidden} : std::vector<int64_t>{0}, input.options());
  if (p.batch > 0) {
    kernels().cell_backward(p, RnnBackwardIn{gh.data_ptr(), nullptr, g_cy ? g_cy->data_ptr() : nullptr, nullptr, ws.data_ptr()},
                            RnnBackwardOut{d_x.data_ptr(), d_rec.data_ptr(), direct.data_ptr(),
                                           mode == 0 ? grad_cx.data_ptr() : nullptr, nullptr});
  }
  const at::Tensor d_x_acc = d_x.to(acc);
  at::Tensor grad_input = at::mm(d_x_acc, a.w_ih.to(acc)).to(dtype);
  at::Tensor grad_hx = at::add(at::mm(d_rec, a.w_hh.to(acc)), direct).to(dtype);
  at::Tensor grad_w_ih = at::mm(d_x_acc.t(), a.input.to(acc)).to(dtype);
  at::Tensor grad_w_hh = at::mm(d_rec.t(), a.hx.to(acc)).to(dtype);
  at::Tensor grad_b_ih = has_bias ? d_x_acc.sum(0).to(dtype) : at::empty({0}, input.options());
  at::Tensor grad_b_hh = has_bias ? d_rec.sum(0).to(dtype) : at::empty({0}, input.options());
  return {grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(bigkern, CPU, m) {
  m.impl("rnn_cell_forward", &rnn_cell_forward);
  m.impl("rnn_cell_backward", &rnn_cell_backward);
  m.impl("rnn_layer_forward", &rnn_layer_forward);
  m.impl("rnn_layer_backward", &rnn_layer_backward);
}

}  // namespace bigkern::cpu
