// Schemas of the convolution ops. Each is defined once, here; the CPU kernels (csrc/cpu/conv*)
// and the CUDA kernels (csrc/cuda/conv/) register implementations under their dispatch keys, and
// bigkern/ops/conv.py registers the fake kernels, the autograd formula and the Triton twins
// (namespace bigkern_triton) from these.
//
// The contract every backend implements:
//   conv2d(input, weight, bias, residual, stride, padding, dilation, groups, activation,
//          save_preactivation) -> (out, preactivation)
//     input    (N, C, H, W), any strides; NCHW and channels_last are the native layouts.
//     weight   (K, C / groups, R, S), any strides.
//     bias     (K) or None.           residual  (N, K, P, Q) or None (any strides).
//     padding  [top, left, bottom, right]: asymmetric padding is how F.conv2d's padding="same"
//              with an even kernel reaches the kernels, at no cost (only top/left enter the
//              address arithmetic; all four enter the output size).
//     P = (H + top + bottom - dilation_h * (R - 1) - 1) / stride_h + 1, Q likewise.
//     activation  0 none, 1 relu, 2 gelu (the erf form, F.gelu's default), 3 silu.
//     The epilogue, in the same kernel: z = conv(input, weight) + bias + residual; out = act(z).
//     out has input's dtype and input's suggested memory format (channels_last in, channels_last
//     out). preactivation is z when save_preactivation and activation is gelu or silu (autograd
//     needs it), else an empty tensor; relu's backward reads out itself (out > 0 iff z > 0).
//     Accumulation is in float32 for float16/bfloat16 (and float64 for float64).
//
//   conv2d_backward(grad_output, input, weight, activation_input, stride, padding, dilation,
//                   groups, activation, output_mask) -> (grad_input, grad_weight, grad_bias,
//                   grad_preactivation)
//     activation_input  z for gelu/silu, out for relu, ignored (may be empty) for none.
//     grad_z = grad_output * act'(z) is formed inside the op; then grad_input (dgrad, input's
//     layout), grad_weight (wgrad, weight's shape, contiguous) and grad_bias = sum of grad_z over
//     N, P, Q. output_mask [input, weight, bias, preactivation] says which to compute; the others
//     come back empty. grad_preactivation (= the residual's gradient) is grad_z itself, returned
//     only for activation != none (for none the caller already holds it: it is grad_output).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "schema/schemas.h"

namespace bigkern {

void define_conv_ops(torch::Library& m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, int[4] padding, "
      "int[2] dilation, int groups, int activation, bool save_preactivation) -> (Tensor, Tensor)",
      tags);
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor activation_input, int[2] stride, "
      "int[4] padding, int[2] dilation, int groups, int activation, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)",
      tags);
}

}  // namespace bigkern
