// CUDA implementations of the recurrent ops (schemas and contract: csrc/schema/rnn.cpp).
//
// Layer forward: the persistent kernel (forward.cu) when the recurrent weights fit in shared
// memory across a co-resident grid, else one fused step kernel per step; with a projection, the
// step kernel then a cuBLAS product per step. Backward through time: per step the pointwise
// kernel (backward.cu) and a cuBLAS product d_gates @ w_hh; the weight gradients are one GEMM
// over all steps at the end. Cells: the step kernel with both products, and the pointwise
// backward followed by GEMMs. States between steps are float32 (the accumulation type).
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "cuda/rnn/rnn_params.h"

namespace bigkern::cuda::rnn {
namespace {

int64_t gates_of(int64_t mode, const char* op) {
  TORCH_CHECK(mode >= 0 && mode <= 3, op, ": mode must be 0 (LSTM), 1 (GRU), 2 (RNN tanh) or 3 (RNN relu), got ", mode);
  return mode == 0 ? 4 : mode == 1 ? 3 : 1;
}

Dtype dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dtype::kFloat;
    case at::kHalf: return Dtype::kHalf;
    case at::kBFloat16: return Dtype::kBFloat16;
    default: TORCH_CHECK(false, op, ": the CUDA recurrent kernels take float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like, std::vector<int64_t> shape, const char* op) {
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but expected ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but expected ",
              like.scalar_type());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), op, ": ", name, " has shape ", t.sizes(), "; expected ",
              at::IntArrayRef(shape));
}

int64_t workspace_width(int64_t mode, int64_t hidden, bool projecting) {
  return mode == 0 ? (projecting ? 6 : 5) * hidden : mode == 1 ? 4 * hidden : hidden;
}

const void* ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }
std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}
at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// A host vector as an int64 tensor on `device`.
at::Tensor to_device(const std::vector<int64_t>& values, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(values.begin(), values.end(), host.data_ptr<int64_t>());
  return host.to(device);
}

// The visiting order of a layer's steps: (row offset, live rows) per visit.
struct Plan {
  std::vector<int64_t> offsets, sizes;
  int64_t rows = 0;
};

Plan plan_of(const at::Tensor& batch_sizes, int64_t batch, bool reverse, const char* op) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong && batch_sizes.dim() == 1, op,
              ": batch_sizes must be a 1-D int64 CPU tensor");
  const at::Tensor sizes = batch_sizes.contiguous();
  const int64_t* s = sizes.data_ptr<int64_t>();
  const int64_t steps = sizes.numel();
  std::vector<int64_t> offsets(steps);
  Plan plan;
  int64_t previous = batch;
  for (int64_t t = 0; t < steps; ++t) {
    TORCH_CHECK(s[t] >= 1 && s[t] <= previous && (t > 0 || s[t] == batch), op,
                ": batch_sizes must be non-increasing, start at the batch ", batch, " and stay >= 1; got ", s[t],
                " at step ", t);
    previous = s[t];
    offsets[t] = plan.rows;
    plan.rows += s[t];
  }
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t t = reverse ? steps - 1 - i : i;
    plan.offsets.push_back(offsets[t]);
    plan.sizes.push_back(s[t]);
  }
  return plan;
}

// For each packed row, its starting state's row in cat([initial state, output rows]).
at::Tensor previous_rows(const Plan& plan, int64_t batch, const at::Device& device) {
  std::vector<int64_t> index(plan.rows);
  for (size_t v = 0; v < plan.sizes.size(); ++v) {
    for (int64_t b = 0; b < plan.sizes[v]; ++b) {
      const bool live_before = v > 0 && plan.sizes[v - 1] > b;
      index[plan.offsets[v] + b] = live_before ? batch + plan.offsets[v - 1] + b : b;
    }
  }
  return to_device(index, device);
}

struct Layer {
  int64_t G, B, H, P;
};

Layer check_layer(int64_t mode, const at::Tensor& hx, const std::optional<at::Tensor>& cx, const at::Tensor& w_hh,
                  const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr, const char* op) {
  const int64_t G = gates_of(mode, op);
  dtype_of(hx, op);
  TORCH_CHECK(hx.is_cuda(), op, ": hx must be a CUDA tensor, got one on ", hx.device());
  TORCH_CHECK(hx.dim() == 2, op, ": hx must be 2-D (batch, out_size), got shape ", hx.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % G == 0 && w_hh.size(0) > 0, op, ": w_hh must be (", G,
              " * hidden, out_size), got shape ", w_hh.sizes());
  const int64_t B = hx.size(0), H = w_hh.size(0) / G, P = hx.size(1);
  check(w_hh, "w_hh", hx, {G * H, P}, op);
  TORCH_CHECK(!w_hr.has_value() || mode == 0, op, ": w_hr (a projection) is an LSTM option, got mode ", mode);
  if (w_hr) check(*w_hr, "w_hr", hx, {P, H}, op);
  if (!w_hr) TORCH_CHECK(P == H, op, ": hx has ", P, " columns but the hidden size is ", H);
  TORCH_CHECK(mode != 0 || cx.has_value(), op, ": the LSTM needs cx");
  if (mode == 0) check(*cx, "cx", hx, {B, H}, op);
  if (b_hh) check(*b_hh, "b_hh", hx, {G * H}, op);
  return {G, B, H, P};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_forward(
    int64_t mode, const at::Tensor& x_proj_in, const at::Tensor& batch_sizes, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, const at::Tensor& w_hh_in, const std::optional<at::Tensor>& b_hh_in,
    const std::optional<at::Tensor>& w_hr, bool reverse, bool save_workspace) {
  const char* op = "bigkern::rnn_layer_forward";
  const Layer l = check_layer(mode, hx, cx, w_hh_in, b_hh_in, w_hr, op);
  const c10::cuda::CUDAGuard guard(hx.device());
  const Plan plan = plan_of(batch_sizes, l.B, reverse, op);
  check(x_proj_in, "x_proj", hx, {plan.rows, l.G * l.H}, op);
  const at::Tensor x_proj = x_proj_in.contiguous(), w_hh = w_hh_in.contiguous();
  const std::optional<at::Tensor> b_hh = contiguous(b_hh_in);
  const bool projecting = w_hr.has_value();
  const int64_t steps = static_cast<int64_t>(plan.sizes.size());
  std::vector<int64_t> order(plan.offsets);
  order.insert(order.end(), plan.sizes.begin(), plan.sizes.end());
  const at::Tensor order_dev = to_device(order, hx.device());

  at::Tensor state[2] = {f32(hx).clone(), f32(hx).clone()};
  at::Tensor c = mode == 0 ? f32(*cx).clone() : at::Tensor();
  at::Tensor output = at::empty({plan.rows, l.P}, hx.options());
  const at::TensorOptions f32_options = hx.options().dtype(at::kFloat);
  at::Tensor ws = save_workspace ? at::empty({plan.rows, workspace_width(mode, l.H, projecting)}, f32_options)
                                 : at::empty({0}, f32_options);
  at::Tensor h_raw = projecting ? at::empty({l.B, l.H}, f32_options) : at::Tensor();

  StepParams p{};
  p.mode = static_cast<int>(mode);
  p.dtype = dtype_of(hx, op);
  p.batch = l.B;
  p.hidden = l.H;
  p.out_size = l.P;
  p.steps = steps;
  p.d_offsets = order_dev.data_ptr<int64_t>();
  p.d_sizes = order_dev.data_ptr<int64_t>() + steps;
  p.x_proj = x_proj.data_ptr();
  p.w_hh = w_hh.data_ptr();
  p.b_hh = ptr(b_hh);
  p.h_state[0] = state[0].data_ptr<float>();
  p.h_state[1] = state[1].data_ptr<float>();
  p.c_state = mode == 0 ? c.data_ptr<float>() : nullptr;
  p.output = projecting ? nullptr : output.data_ptr();
  p.h_raw = projecting ? h_raw.data_ptr<float>() : nullptr;
  p.workspace = save_workspace ? ws.data_ptr<float>() : nullptr;
  p.ws_width = workspace_width(mode, l.H, projecting);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  int final_state = 0;
  if (projecting) {
    const at::Tensor w_hr_t = f32(*w_hr).t();
    for (int64_t v = 0; v < steps; ++v) {
      const int64_t off = plan.offsets[v], size = plan.sizes[v];
      launch_step_forward(p, v, off, size, 0, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const at::Tensor projected = at::mm(h_raw.narrow(0, 0, size), w_hr_t);
      state[0].narrow(0, 0, size).copy_(projected);
      output.narrow(0, off, size).copy_(projected);
    }
  } else if (launch_persistent_forward(p, stream)) {
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    final_state = static_cast<int>(steps % 2);
  } else {
    int cur = 0;
    for (int64_t v = 0; v < steps; ++v) {
      launch_step_forward(p, v, plan.offsets[v], plan.sizes[v], cur, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      cur = 1 - cur;
    }
    final_state = cur;
  }
  at::Tensor hy = state[final_state].to(hx.scalar_type());
  at::Tensor cy = mode == 0 ? c.to(hx.scalar_type()) : at::empty({0}, hx.options());
  return {output, hy, cy, ws};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_backward(
    int64_t mode, const at::Tensor& grad_output, const std::optional<at::Tensor>& grad_hy,
    const std::optional<at::Tensor>& grad_cy, const at::Tensor& batch_sizes, const at::Tensor& hx,
    const std::optional<at::Tensor>& cx, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, const at::Tensor& output, const at::Tensor& workspace_in, bool reverse) {
  const char* op = "bigkern::rnn_layer_backward";
  const Layer l = check_layer(mode, hx, cx, w_hh, b_hh, w_hr, op);
  const c10::cuda::CUDAGuard guard(hx.device());
  const Plan plan = plan_of(batch_sizes, l.B, reverse, op);
  const bool projecting = w_hr.has_value();
  check(grad_output, "grad_output", hx, {plan.rows, l.P}, op);
  check(output, "output", hx, {plan.rows, l.P}, op);
  const int64_t W = workspace_width(mode, l.H, projecting);
  TORCH_CHECK(workspace_in.scalar_type() == at::kFloat && workspace_in.dim() == 2 && workspace_in.size(0) == plan.rows &&
                  workspace_in.size(1) == W,
              op, ": workspace must be the forward's (", plan.rows, ", ", W, ") float32 workspace, got shape ",
              workspace_in.sizes());
  const at::Tensor ws = workspace_in.contiguous();
  const at::TensorOptions f32_options = hx.options().dtype(at::kFloat);
  const at::Tensor index = previous_rows(plan, l.B, hx.device());
  const at::Tensor h_prev_rows = at::index_select(f32(at::cat({hx, output})), 0, index);
  at::Tensor c_prev_rows;
  if (mode == 0) c_prev_rows = at::index_select(at::cat({f32(*cx), ws.narrow(1, 4 * l.H, l.H)}), 0, index).contiguous();
  at::Tensor dh = grad_hy ? f32(*grad_hy).clone() : at::zeros({l.B, l.P}, f32_options);
  at::Tensor dc = mode == 0 ? (grad_cy ? f32(*grad_cy).clone() : at::zeros({l.B, l.H}, f32_options)) : at::Tensor();
  at::Tensor grad_x = at::empty({plan.rows, l.G * l.H}, hx.options());
  at::Tensor d_rec = at::empty({plan.rows, l.G * l.H}, f32_options);
  at::Tensor direct = mode == 1 ? at::empty({l.B, l.H}, f32_options) : at::Tensor();
  at::Tensor dh_rows = projecting ? at::empty({plan.rows, l.P}, f32_options) : at::Tensor();
  const at::Tensor w_hh_f = f32(w_hh), go = f32(grad_output);
  const at::Tensor w_hr_f = projecting ? f32(*w_hr) : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t v = static_cast<int64_t>(plan.sizes.size()) - 1; v >= 0; --v) {
    const int64_t off = plan.offsets[v], size = plan.sizes[v];
    at::Tensor d = at::add(go.narrow(0, off, size), dh.narrow(0, 0, size));
    if (projecting) {
      dh_rows.narrow(0, off, size).copy_(d);
      d = at::mm(d, w_hr_f);
    }
    d = d.contiguous();
    BackwardParams bp{};
    bp.mode = static_cast<int>(mode);
    bp.dtype = dtype_of(hx, op);
    bp.rows = size;
    bp.hidden = l.H;
    bp.ws_width = W;
    bp.row_offset = off;
    bp.dh = d.data_ptr<float>();
    bp.dc = mode == 0 ? dc.data_ptr<float>() : nullptr;
    bp.ws = ws.data_ptr<float>();
    bp.c_prev = mode == 0 ? c_prev_rows.data_ptr<float>() + off * l.H : nullptr;
    bp.h_prev = mode == 1 ? h_prev_rows.data_ptr<float>() + off * l.P : nullptr;
    bp.grad_x = grad_x.data_ptr();
    bp.d_rec = d_rec.data_ptr<float>();
    bp.direct = mode == 1 ? direct.data_ptr<float>() : nullptr;
    launch_gates_backward(bp, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor step_grad = at::mm(d_rec.narrow(0, off, size), w_hh_f);
    if (mode == 1) step_grad = at::add(step_grad, direct.narrow(0, 0, size));
    dh.narrow(0, 0, size).copy_(step_grad);
  }
  const at::Tensor empty = at::empty({0}, hx.options());
  at::Tensor grad_w_hh = at::mm(d_rec.t(), h_prev_rows).to(hx.scalar_type());
  at::Tensor grad_b_hh = b_hh ? d_rec.sum(0).to(hx.scalar_type()) : empty;
  at::Tensor grad_w_hr = projecting ? at::mm(dh_rows.t(), ws.narrow(1, 5 * l.H, l.H)).to(hx.scalar_type()) : empty;
  at::Tensor grad_cx = mode == 0 ? dc.to(hx.scalar_type()) : empty;
  return {grad_x, dh.to(hx.scalar_type()), grad_cx, grad_w_hh, grad_b_hh, grad_w_hr};
}

Layer check_cell(int64_t mode, const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                 const at::Tensor& w_ih, const at::Tensor& w_hh, const char* op) {
  const int64_t G = gates_of(mode, op);
  dtype_of(input, op);
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor, got one on ", input.device());
  TORCH_CHECK(input.dim() == 2 && hx.dim() == 2, op, ": input and hx must be 2-D, got shapes ", input.sizes(), " and ",
              hx.sizes());
  const int64_t B = input.size(0), H = hx.size(1);
  check(hx, "hx", input, {B, H}, op);
  check(w_ih, "w_ih", input, {G * H, input.size(1)}, op);
  check(w_hh, "w_hh", input, {G * H, H}, op);
  TORCH_CHECK(mode != 0 || cx.has_value(), op, ": the LSTM cell needs cx");
  if (mode == 0) check(*cx, "cx", input, {B, H}, op);
  return {G, B, H, H};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_cell_forward(int64_t mode, const at::Tensor& input_in,
                                                                const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                                                                const at::Tensor& w_ih_in, const at::Tensor& w_hh_in,
                                                                const std::optional<at::Tensor>& b_ih_in,
                                                                const std::optional<at::Tensor>& b_hh_in,
                                                                bool save_workspace) {
  const char* op = "bigkern::rnn_cell_forward";
  const Layer l = check_cell(mode, input_in, hx, cx, w_ih_in, w_hh_in, op);
  TORCH_CHECK(b_ih_in.has_value() == b_hh_in.has_value(), op, ": pass both b_ih and b_hh or neither");
  if (b_ih_in) {
    check(*b_ih_in, "b_ih", input_in, {l.G * l.H}, op);
    check(*b_hh_in, "b_hh", input_in, {l.G * l.H}, op);
  }
  const c10::cuda::CUDAGuard guard(input_in.device());
  const at::Tensor input = input_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const std::optional<at::Tensor> b_ih = contiguous(b_ih_in), b_hh = contiguous(b_hh_in);
  const at::TensorOptions f32_options = input.options().dtype(at::kFloat);
  at::Tensor state[2] = {f32(hx).clone(), at::empty({l.B, l.H}, f32_options)};
  at::Tensor c = mode == 0 ? f32(*cx).clone() : at::Tensor();
  at::Tensor hy = at::empty({l.B, l.H}, input.options());
  at::Tensor ws = save_workspace ? at::empty({l.B, workspace_width(mode, l.H, false)}, f32_options) : at::empty({0}, f32_options);
  StepParams p{};
  p.mode = static_cast<int>(mode);
  p.dtype = dtype_of(input, op);
  p.batch = l.B;
  p.hidden = l.H;
  p.out_size = l.H;
  p.input_size = input.size(1);
  p.steps = 1;
  p.input = input.data_ptr();
  p.w_ih = w_ih.data_ptr();
  p.w_hh = w_hh.data_ptr();
  p.b_ih = ptr(b_ih);
  p.b_hh = ptr(b_hh);
  p.h_state[0] = state[0].data_ptr<float>();
  p.h_state[1] = state[1].data_ptr<float>();
  p.c_state = mode == 0 ? c.data_ptr<float>() : nullptr;
  p.output = hy.data_ptr();
  p.workspace = save_workspace ? ws.data_ptr<float>() : nullptr;
  p.ws_width = workspace_width(mode, l.H, false);
  launch_step_forward(p, 0, 0, l.B, 0, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor cy = mode == 0 ? c.to(input.scalar_type()) : at::empty({0}, input.options());
  return {hy, cy, ws};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cell_backward(
    int64_t mode, const at::Tensor& grad_hy, const std::optional<at::Tensor>& grad_cy, const at::Tensor& input,
    const at::Tensor& hx, const std::optional<at::Tensor>& cx, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& workspace_in, bool has_bias) {
  const char* op = "bigkern::rnn_cell_backward";
  const Layer l = check_cell(mode, input, hx, cx, w_ih, w_hh, op);
  check(grad_hy, "grad_hy", input, {l.B, l.H}, op);
  const int64_t W = workspace_width(mode, l.H, false);
  TORCH_CHECK(workspace_in.scalar_type() == at::kFloat && workspace_in.dim() == 2 && workspace_in.size(0) == l.B &&
                  workspace_in.size(1) == W,
              op, ": workspace must be the forward's (", l.B, ", ", W, ") float32 workspace, got shape ",
              workspace_in.sizes());
  const c10::cuda::CUDAGuard guard(input.device());
  const at::TensorOptions f32_options = input.options().dtype(at::kFloat);
  const at::Tensor ws = workspace_in.contiguous(), dh = f32(grad_hy);
  at::Tensor dc = mode == 0 ? (grad_cy ? f32(*grad_cy).clone() : at::zeros({l.B, l.H}, f32_options)) : at::Tensor();
  const at::Tensor c_prev = mode == 0 ? f32(*cx) : at::Tensor(), h_prev = f32(hx);
  at::Tensor d_x = at::empty({l.B, l.G * l.H}, f32_options), d_rec = at::empty({l.B, l.G * l.H}, f32_options);
  at::Tensor direct = at::zeros({l.B, l.H}, f32_options);
  BackwardParams bp{};
  bp.mode = static_cast<int>(mode);
  bp.dtype = Dtype::kFloat;  // d_x stays float32 here: the GEMMs below read it
  bp.rows = l.B;
  bp.hidden = l.H;
  bp.ws_width = W;
  bp.dh = dh.data_ptr<float>();
  bp.dc = mode == 0 ? dc.data_ptr<float>() : nullptr;
  bp.ws = ws.data_ptr<float>();
  bp.c_prev = mode == 0 ? c_prev.data_ptr<float>() : nullptr;
  bp.h_prev = h_prev.data_ptr<float>();
  bp.grad_x = d_x.data_ptr();
  bp.d_rec = d_rec.data_ptr<float>();
  bp.direct = direct.data_ptr<float>();
  launch_gates_backward(bp, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::ScalarType dtype = input.scalar_type();
  const at::Tensor empty = at::empty({0}, input.options());
  at::Tensor grad_input = at::mm(d_x, f32(w_ih)).to(dtype);
  at::Tensor grad_hx = at::add(at::mm(d_rec, f32(w_hh)), direct).to(dtype);
  at::Tensor grad_w_ih = at::mm(d_x.t(), f32(input)).to(dtype);
  at::Tensor grad_w_hh = at::mm(d_rec.t(), h_prev).to(dtype);
  at::Tensor grad_b_ih = has_bias ? d_x.sum(0).to(dtype) : empty;
  at::Tensor grad_b_hh = has_bias ? d_rec.sum(0).to(dtype) : empty;
  return {grad_input, grad_hx, mode == 0 ? dc.to(dtype) : empty, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("rnn_cell_forward", &rnn_cell_forward);
  m.impl("rnn_cell_backward", &rnn_cell_backward);
  m.impl("rnn_layer_forward", &rnn_layer_forward);
  m.impl("rnn_layer_backward", &rnn_layer_backward);
}

}  // namespace bigkern::cuda::rnn
