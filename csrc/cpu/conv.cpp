// CPU implementations of the convolution ops (schemas and contract: csrc/schema/conv.cpp).
//
// Each op checks its arguments, brings the operands into the kernels' layouts (the input and
// the gradients channels_last, the weight contiguous: a no-op for tensors already so, one
// deliberate copy otherwise), and calls the kernel table of the best instruction set this
// processor supports (conv_kernels.h: implicit GEMMs with the epilogue fused). Outputs are
// allocated in the input's suggested memory format and written in place through their
// strides. bfloat16 operands are computed in float32 (converted on the way in and out).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "cpu/conv_kernel_table.h"
#include "cpu/isa.h"

namespace bigkern::cpu {
namespace {

// AVX-512's register tiles are 64 channels wide (16 floats x 4 vectors) or 32 (the narrow build),
// AVX2's 16. A layer whose tile width is far from a multiple of the block would spend the tile's
// lanes on padding: at 32 channels the 64-wide build took 2.2x torch's time. Each layer takes the
// widest block it fills to within 25% (64, then 32, else the AVX2 build: LeNet's 6 channels). The
// forward's tile spans the output channels (all channels for depthwise); the backward's also the
// input channels (dgrad's tile, wgrad's columns). `bigkern._C.cpu_isa()` reports the widest build.
bool fills_blocks(const ConvShape& s, bool backward, int64_t block) {
  auto fills = [block](int64_t width) { return (width + block - 1) / block * block * 4 <= width * 5; };
  if (is_depthwise(s)) return fills(s.C);
  return fills(s.K / s.groups) && (!backward || fills(s.C / s.groups));
}

// any_width: the call runs on AMX tiles (a float32 forward, conv_amx.h) or along rows
// (conv_direct_rows.h), whose lanes the channel count does not fill: the 64-wide build serves it.
// (At stride 1 both AVX-512 builds run the backward's input gradient on the tiles.)
const ConvKernelTable& kernels(const ConvShape& s, bool backward, bool any_width = false) {
  static const IsaLevel level = cpu_isa_level();
  if (level == IsaLevel::kAvx512) {
    if (any_width) return avx512::conv_kernels();
    if (fills_blocks(s, backward, 64)) return avx512::conv_kernels();
    if (fills_blocks(s, backward, 32)) return avx512_narrow::conv_kernels();
    return avx2::conv_kernels();
  }
  return level == IsaLevel::kAvx2 ? avx2::conv_kernels() : baseline::conv_kernels();
}

void check_dtype(const at::Tensor& t, const char* name, const at::Tensor& input, const char* op) {
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but input has ", input.scalar_type(), "; they must match");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " is on ", t.device(), "; the CPU kernels take CPU tensors");
}

ConvShape conv_shape(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                     at::IntArrayRef dilation, int64_t groups, const char* op) {
  TORCH_CHECK(input.dim() == 4, op, ": input must be 4-D (N, C, H, W), got shape ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, op, ": weight must be 4-D (K, C/groups, R, S), got shape ", weight.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16, op,
              ": the CPU kernels take float32, bfloat16 or float64 input, got ", dtype);
  check_dtype(weight, "weight", input, op);
  TORCH_CHECK(stride.size() == 2 && dilation.size() == 2 && padding.size() == 4, op,
              ": stride and dilation take 2 values and padding 4 (top, left, bottom, right)");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, op, ": stride must be positive, got ", stride);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, op, ": dilation must be positive, got ", dilation);
  for (int64_t p : padding) TORCH_CHECK(p >= 0, op, ": padding must be non-negative, got ", padding);
  TORCH_CHECK(groups > 0, op, ": groups must be positive, got ", groups);
  ConvShape s{};
  s.N = input.size(0), s.C = input.size(1), s.H = input.size(2), s.W = input.size(3);
  s.K = weight.size(0), s.R = weight.size(2), s.S = weight.size(3);
  TORCH_CHECK(s.C > 0 && s.H > 0 && s.W > 0 && s.R > 0 && s.S > 0, op, ": input ", input.sizes(), " and weight ",
              weight.sizes(), " must not have empty channel or spatial dims");
  TORCH_CHECK(weight.size(1) * groups == s.C, op, ": input has ", s.C, " channels but weight ", weight.sizes(),
              " with groups=", groups, " expects ", weight.size(1) * groups);
  TORCH_CHECK(s.K > 0 && s.K % groups == 0, op, ": weight has ", s.K, " output channels, not a positive multiple of groups=", groups);
  s.stride_h = stride[0], s.stride_w = stride[1], s.dilation_h = dilation[0], s.dilation_w = dilation[1];
  s.pad_top = padding[0], s.pad_left = padding[1], s.groups = groups;
  s.P = (s.H + padding[0] + padding[2] - s.dilation_h * (s.R - 1) - 1) / s.stride_h + 1;
  s.Q = (s.W + padding[1] + padding[3] - s.dilation_w * (s.S - 1) - 1) / s.stride_w + 1;
  TORCH_CHECK(s.H + padding[0] + padding[2] >= s.dilation_h * (s.R - 1) + 1 &&
                  s.W + padding[1] + padding[3] >= s.dilation_w * (s.S - 1) + 1,
              op, ": the padded input (", s.H + padding[0] + padding[2], ", ", s.W + padding[1] + padding[3],
              ") is smaller than the dilated kernel (", s.dilation_h * (s.R - 1) + 1, ", ", s.dilation_w * (s.S - 1) + 1, ")");
  return s;
}

at::ScalarType compute_type(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

Strided strided(const at::Tensor& t) {
  return Strided{t.data_ptr(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

at::Tensor channels_last(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
}

void check_activation(int64_t activation, const char* op) {
  TORCH_CHECK(activation >= 0 && activation <= 3, op, ": activation must be 0 (none), 1 (relu), 2 (gelu) or 3 (silu), got ",
              activation);
}

std::tuple<at::Tensor, at::Tensor> conv2d(const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t groups, int64_t activation, bool save_preactivation) {
  const char* op = "bigkern::conv2d";
  const ConvShape s = conv_shape(input, weight, stride, padding, dilation, groups, op);
  check_activation(activation, op);
  if (bias) {
    check_dtype(*bias, "bias", input, op);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.K, op, ": bias has shape ", bias->sizes(), "; expected (", s.K, ")");
  }
  if (residual) {
    check_dtype(*residual, "residual", input, op);
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({s.N, s.K, s.P, s.Q}), op, ": residual has shape ", residual->sizes(),
                "; expected the output's (", s.N, ", ", s.K, ", ", s.P, ", ", s.Q, ")");
  }
  const at::ScalarType acc = compute_type(input);
  const auto format = input.suggest_memory_format();
  const auto options = input.options().dtype(acc).memory_format(format);
  at::Tensor out = at::empty({s.N, s.K, s.P, s.Q}, options);
  const bool keep = save_preactivation && (activation == 2 || activation == 3);
  at::Tensor preact = keep ? at::empty({s.N, s.K, s.P, s.Q}, options) : at::empty({0}, input.options());
  if (s.N > 0) {
    // Two forwards read the input through its strides, so it goes to them as it is: the AMX
    // forward (float32; it gathers 16 channels at a time, so 15 channel strides must fit its
    // int32 offsets) and the direct row kernel of first layers where a row's pixels are contiguous.
    const bool as_given = input.scalar_type() == acc &&
                          ((acc == at::kFloat && amx_conv_runs(s) && input.stride(1) <= std::numeric_limits<int32_t>::max() / 16) ||
                           (direct_rows_conv(s) && input.stride(3) == 1));
    const at::Tensor x = as_given ? input : channels_last(input, acc);
    const at::Tensor w = weight.to(acc).contiguous();
    const at::Tensor b = bias ? bias->to(acc).contiguous() : at::Tensor();
    const at::Tensor res = residual ? residual->to(acc) : at::Tensor();
    ConvForwardArgs a{};
    a.x = as_given ? nullptr : x.data_ptr(), a.input = strided(x);
    a.weight = w.data_ptr(), a.bias = bias ? b.data_ptr() : nullptr;
    if (residual) a.residual = strided(res);
    a.out = strided(out);
    if (keep) a.preact = strided(preact);
    a.activation = activation;
    a.bfloat16_operands = input.scalar_type() == at::kBFloat16;
    const bool any_width = (acc == at::kFloat && amx_conv_runs(s)) || (direct_rows_conv(s) && x.stride(3) == 1);
    kernels(s, false, any_width).forward(s, a, acc == at::kDouble);
  }
  if (input.scalar_type() != acc) {
    out = out.to(input.scalar_type());
    if (keep) preact = preact.to(input.scalar_type());
  }
  return {out, preact};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& activation_input,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t activation,
    std::array<bool, 4> output_mask) {
  const char* op = "bigkern::conv2d_backward";
  const ConvShape s = conv_shape(input, weight, stride, padding, dilation, groups, op);
  check_activation(activation, op);
  check_dtype(grad_output, "grad_output", input, op);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({s.N, s.K, s.P, s.Q}), op, ": grad_output has shape ",
              grad_output.sizes(), "; expected (", s.N, ", ", s.K, ", ", s.P, ", ", s.Q, ")");
  if (activation != 0) {
    check_dtype(activation_input, "activation_input", input, op);
    TORCH_CHECK(activation_input.sizes() == grad_output.sizes(), op, ": activation_input has shape ",
                activation_input.sizes(), "; expected grad_output's ", grad_output.sizes());
  }
  const at::ScalarType acc = compute_type(input), dtype = input.scalar_type();
  const auto options = input.options().dtype(acc);
  const auto format = input.suggest_memory_format();
  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), options.memory_format(format)) : at::empty({0}, options);
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), options) : at::empty({0}, options);
  at::Tensor grad_bias = output_mask[2] ? at::empty({s.K}, options) : at::empty({0}, options);
  const bool want_preact = output_mask[3] && activation != 0;
  at::Tensor grad_preact = want_preact ? at::empty(grad_output.sizes(), options.memory_format(format)) : at::empty({0}, options);
  // A first layer's weight gradient alone (its input needs none) runs the direct row kernel on the
  // operands as given where their rows are contiguous (conv_direct_rows.h): no layout copies.
  auto rows_ok = [&](const at::Tensor& t) { return t.scalar_type() == acc && t.stride(3) == 1; };
  const bool rows = s.N > 0 && direct_rows_conv(s) && !output_mask[0] && !want_preact && rows_ok(input) &&
                    rows_ok(grad_output) && (activation == 0 || rows_ok(activation_input));
  if (rows) {
    ConvBackwardArgs a{};
    a.activation = activation;
    a.input_rows = strided(input), a.grad_output_rows = strided(grad_output);
    if (activation != 0) a.activation_rows = strided(activation_input);
    a.grad_weight = output_mask[1] ? grad_weight.data_ptr() : nullptr;
    a.grad_bias = output_mask[2] ? grad_bias.data_ptr() : nullptr;
    kernels(s, true, true).backward(s, a, acc == at::kDouble);
  } else if (s.N > 0) {
    const at::Tensor go = channels_last(grad_output, acc);
    const at::Tensor act = activation != 0 ? channels_last(activation_input, acc) : at::Tensor();
    const at::Tensor x = channels_last(input, acc);
    const at::Tensor w = weight.to(acc).contiguous();
    at::Tensor grad_z = activation != 0 ? at::empty({s.N, s.P, s.Q, s.K}, options) : at::Tensor();
    ConvBackwardArgs a{};
    a.grad_output = go.data_ptr(), a.activation_input = activation != 0 ? act.data_ptr() : nullptr;
    a.x = x.data_ptr(), a.weight = w.data_ptr(), a.activation = activation;
    a.grad_z = activation != 0 ? grad_z.data_ptr() : nullptr;
    if (output_mask[0]) a.grad_input = strided(grad_input);
    a.grad_weight = output_mask[1] ? grad_weight.data_ptr() : nullptr;
    a.grad_bias = output_mask[2] ? grad_bias.data_ptr() : nullptr;
    if (want_preact) a.grad_preact = strided(grad_preact);
    kernels(s, true).backward(s, a, acc == at::kDouble);
  } else {
    if (output_mask[1]) grad_weight.zero_();
    if (output_mask[2]) grad_bias.zero_();
  }
  if (dtype != acc) {
    auto narrow = [&](at::Tensor& t) { t = t.to(dtype); };
    narrow(grad_input), narrow(grad_weight), narrow(grad_bias), narrow(grad_preact);
  }
  return {grad_input, grad_weight, grad_bias, grad_preact};
}

}  // namespace
}  // namespace bigkern::cpu

TORCH_LIBRARY_IMPL(bigkern, CPU, m) {
  m.impl("conv2d", &bigkern::cpu::conv2d);
  m.impl("conv2d_backward", &bigkern::cpu::conv2d_backward);
}
