// CUDA implementations of the convolution ops (schemas and contract: csrc/schema/conv.cpp).
//
// The host checks the arguments, brings x and the gradient into channels-last storage and the
// weight into KRSC order (one deliberate copy each when they are not already so), allocates the
// outputs in the input's memory format, and launches (forward.cu, backward.cu):
//   forward   depthwise kernel | tensor-core implicit GEMM (float16/bfloat16, C/G % 8 == 0) |
//             SIMT implicit GEMM, all with the fused epilogue
//   backward  activation gradient (pointwise), bias gradient (column sums), dgrad, and wgrad split
//             over the output pixels into float32 (float64) partial sums, then their reduction
// Everything runs on the current stream; nothing synchronises with the host.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>

#include "cuda/conv/conv_params.h"

namespace bigkern::cuda::conv {
namespace {

Dtype dtype_of(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dtype::kFloat;
    case at::kHalf: return Dtype::kHalf;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kDouble: return Dtype::kDouble;
    default: TORCH_CHECK(false, op, ": the CUDA kernels take float32, float16, bfloat16 or float64, got ", t.scalar_type());
  }
}

void check_operand(const at::Tensor& t, const char* name, const at::Tensor& input, const char* op) {
  TORCH_CHECK(t.is_cuda() && t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but input has ",
              input.scalar_type());
}

Geometry geometry(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups, const char* op) {
  TORCH_CHECK(input.dim() == 4 && weight.dim() == 4, op, ": input and weight must be 4-D, got ", input.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(input.is_cuda(), op, ": input must be a CUDA tensor, got one on ", input.device());
  dtype_of(input, op);
  check_operand(weight, "weight", input, op);
  TORCH_CHECK(stride.size() == 2 && dilation.size() == 2 && padding.size() == 4, op,
              ": stride and dilation take 2 values and padding 4 (top, left, bottom, right)");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0, op,
              ": stride and dilation must be positive, got ", stride, " and ", dilation);
  for (int64_t v : padding) TORCH_CHECK(v >= 0, op, ": padding must be non-negative, got ", padding);
  TORCH_CHECK(groups > 0 && weight.size(1) * groups == input.size(1) && weight.size(0) % groups == 0, op, ": input ",
              input.sizes(), " and weight ", weight.sizes(), " do not match groups=", groups);
  Geometry g{};
  g.N = static_cast<int>(input.size(0)), g.C = static_cast<int>(input.size(1));
  g.H = static_cast<int>(input.size(2)), g.W = static_cast<int>(input.size(3));
  g.K = static_cast<int>(weight.size(0)), g.R = static_cast<int>(weight.size(2)), g.S = static_cast<int>(weight.size(3));
  g.stride_h = static_cast<int>(stride[0]), g.stride_w = static_cast<int>(stride[1]);
  g.pad_top = static_cast<int>(padding[0]), g.pad_left = static_cast<int>(padding[1]);
  g.dilation_h = static_cast<int>(dilation[0]), g.dilation_w = static_cast<int>(dilation[1]);
  g.groups = static_cast<int>(groups), g.Cg = g.C / g.groups, g.Kg = g.K / g.groups;
  const int64_t P = (input.size(2) + padding[0] + padding[2] - dilation[0] * (weight.size(2) - 1) - 1) / stride[0] + 1;
  const int64_t Q = (input.size(3) + padding[1] + padding[3] - dilation[1] * (weight.size(3) - 1) - 1) / stride[1] + 1;
  TORCH_CHECK(P > 0 && Q > 0 && g.C > 0 && g.K > 0, op, ": the output would have size (", P, ", ", Q, ")");
  TORCH_CHECK(input.numel() < (int64_t{1} << 31) && input.size(0) * g.K * P * Q < (int64_t{1} << 31), op,
              ": tensors of 2^31 or more elements are not supported by the CUDA kernels yet");
  g.P = static_cast<int>(P), g.Q = static_cast<int>(Q);
  return g;
}

Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

at::Tensor channels_last(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

at::Tensor krsc(const at::Tensor& weight) { return weight.permute({0, 2, 3, 1}).contiguous(); }

std::tuple<at::Tensor, at::Tensor> conv2d(const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                          at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t groups, int64_t activation, bool save_preactivation) {
  const char* op = "bigkern::conv2d (CUDA)";
  const Geometry g = geometry(input, weight, stride, padding, dilation, groups, op);
  TORCH_CHECK(activation >= 0 && activation <= 3, op, ": activation must be 0, 1, 2 or 3, got ", activation);
  if (bias) {
    check_operand(*bias, "bias", input, op);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.K, op, ": bias has shape ", bias->sizes(), "; expected (", g.K, ")");
  }
  if (residual) {
    check_operand(*residual, "residual", input, op);
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({g.N, g.K, g.P, g.Q}), op, ": residual has shape ",
                residual->sizes(), "; expected the output's");
  }
  const c10::cuda::CUDAGuard guard(input.device());
  const auto options = input.options().memory_format(input.suggest_memory_format());
  at::Tensor out = at::empty({g.N, g.K, g.P, g.Q}, options);
  const bool keep = save_preactivation && (activation == 2 || activation == 3);
  at::Tensor pre = keep ? at::empty({g.N, g.K, g.P, g.Q}, options) : at::empty({0}, input.options());
  if (out.numel() == 0) return {out, pre};
  const at::Tensor x = channels_last(input), w = krsc(weight);
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  ForwardParams p{};
  p.g = g, p.x = x.data_ptr(), p.weight = w.data_ptr(), p.bias = bias ? b.data_ptr() : nullptr;
  if (residual) p.residual = residual->data_ptr(), p.residual_strides = strides_of(*residual);
  p.out = out.data_ptr(), p.out_strides = strides_of(out);
  if (keep) p.pre = pre.data_ptr(), p.pre_strides = strides_of(pre);
  p.activation = static_cast<int>(activation);
  launch_forward(p, dtype_of(input, op), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, pre};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& activation_input,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, int64_t activation,
    std::array<bool, 4> output_mask) {
  const char* op = "bigkern::conv2d_backward (CUDA)";
  const Geometry g = geometry(input, weight, stride, padding, dilation, groups, op);
  TORCH_CHECK(activation >= 0 && activation <= 3, op, ": activation must be 0, 1, 2 or 3, got ", activation);
  check_operand(grad_output, "grad_output", input, op);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.N, g.K, g.P, g.Q}), op, ": grad_output has shape ",
              grad_output.sizes(), "; expected (", g.N, ", ", g.K, ", ", g.P, ", ", g.Q, ")");
  if (activation != 0) {
    check_operand(activation_input, "activation_input", input, op);
    TORCH_CHECK(activation_input.sizes() == grad_output.sizes(), op, ": activation_input has shape ",
                activation_input.sizes(), "; expected grad_output's");
  }
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Dtype dtype = dtype_of(input, op);
  const auto format = input.suggest_memory_format();
  const at::Tensor empty = at::empty({0}, input.options());
  at::Tensor grad_z = channels_last(grad_output);
  const bool want_pre = output_mask[3] && activation != 0;
  if (activation != 0 && grad_z.numel() > 0) {
    const at::Tensor act = channels_last(activation_input);
    at::Tensor scaled = at::empty_like(grad_z);
    launch_preactivation_grad(grad_z.data_ptr(), act.data_ptr(), scaled.data_ptr(), grad_z.numel(),
                              static_cast<int>(activation), dtype, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_z = scaled;
  }
  at::Tensor grad_input = output_mask[0] ? at::empty(input.sizes(), input.options().memory_format(format)) : empty;
  at::Tensor grad_weight = output_mask[1] ? at::empty(weight.sizes(), input.options()) : empty;
  at::Tensor grad_bias = output_mask[2] ? at::empty({g.K}, input.options()) : empty;
  const int64_t pixels = static_cast<int64_t>(g.N) * g.P * g.Q;
  if (output_mask[2]) {
    launch_bias_grad(grad_z.data_ptr(), grad_bias.data_ptr(), pixels, g.K, dtype, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor x = channels_last(input), w = krsc(weight);
  BackwardParams p{};
  p.g = g, p.grad_z = grad_z.data_ptr(), p.x = x.data_ptr(), p.weight = w.data_ptr();
  if (output_mask[0] && grad_input.numel() > 0) {
    p.grad_input = grad_input.data_ptr(), p.grad_input_strides = strides_of(grad_input);
    launch_dgrad(p, dtype, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (output_mask[1]) {
    // Enough blocks to fill the GPU when the weight gradient itself is small (few channels, few
    // taps), each split still reducing over at least 256 pixels.
    const int64_t tiles = int64_t{(g.Kg + 63) / 64} * ((g.Cg + 63) / 64) * g.groups * g.R * g.S;
    p.splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(pixels / 256, (512 + tiles - 1) / tiles)));
    const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor partial = at::empty({p.splits, g.K, g.R, g.S, g.Cg}, input.options().dtype(acc));
    p.weight_partial = partial.data_ptr();
    if (pixels > 0) {
      launch_wgrad(p, dtype, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      partial.zero_();
    }
    launch_wgrad_reduce(p, grad_weight.data_ptr(), dtype, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor grad_pre = want_pre ? grad_z.contiguous(format) : empty;
  return {grad_input, grad_weight, grad_bias, grad_pre};
}

}  // namespace
}  // namespace bigkern::cuda::conv

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("conv2d", &bigkern::cuda::conv::conv2d);
  m.impl("conv2d_backward", &bigkern::cuda::conv::conv2d_backward);
}
