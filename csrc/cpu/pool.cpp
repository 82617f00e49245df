// CPU implementations of the pooling ops (schemas in csrc/schema/pool.cpp).
//
// Each op validates its arguments (common/pool_geometry.h), brings its input into NCHW or
// NHWC contiguous storage (a no-op for tensors already in either; one deliberate copy for any
// other strides), allocates outputs in that same layout, and calls the kernel table of the
// best instruction set this processor supports.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/pool_geometry.h"
#include "cpu/isa.h"
#include "cpu/pool_kernel_table.h"

namespace bigkern::cpu {
namespace {

// The kernel table of the best instruction set this processor supports (cpu/isa.h).
const PoolKernelTable& kernels() {
  static const PoolKernelTable& table = use_avx2_kernels() ? avx2::pool_kernels() : baseline::pool_kernels();
  return table;
}

at::Tensor empty_like_layout(const at::Tensor& x, at::IntArrayRef sizes, const Pool2dGeometry& g,
                             at::ScalarType dtype) {
  return at::empty(sizes, x.options().dtype(dtype).memory_format(memory_format(g)));
}

at::Tensor in_layout(const at::Tensor& t, const Pool2dGeometry& g) { return t.contiguous(memory_format(g)); }

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& self, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode, bool compute_indices) {
  const Pool2dGeometry g =
      window_geometry(self, kernel_size, stride, padding, dilation, ceil_mode, "bigkern::max_pool2d");
  const at::Tensor x = in_layout(self, g);
  at::Tensor out = empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, x.scalar_type());
  at::Tensor indices = compute_indices ? empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, at::kLong)
                                       : at::empty({0}, x.options().dtype(at::kLong));
  if (g.N > 0) kernels().max_pool2d(x, out, compute_indices ? &indices : nullptr, g);
  return {out, indices};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& self, const at::Tensor& indices,
                               at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "bigkern::max_pool2d_backward";
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, dilation, ceil_mode, op);
  check_grad_output(grad_output, g, self, op);
  check_indices(indices, g, self, op);
  at::Tensor grad_in = empty_like_layout(self, {g.N, g.C, g.H, g.W}, g, self.scalar_type());
  if (g.N > 0) kernels().max_backward(in_layout(grad_output, g), in_layout(indices, g), grad_in, g);
  return grad_in;
}

at::Tensor avg_pool2d(const at::Tensor& self, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                      std::optional<int64_t> divisor_override) {
  const char* op = "bigkern::avg_pool2d";
  const int64_t no_dilation[2] = {1, 1};
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, no_dilation, ceil_mode, op);
  check_divisor(divisor_override, op);
  const at::Tensor x = in_layout(self, g);
  at::Tensor out = empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, x.scalar_type());
  if (g.N > 0) kernels().avg_pool2d(x, out, g, count_include_pad, divisor_override);
  return out;
}

at::Tensor avg_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& self, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode,
                               bool count_include_pad, std::optional<int64_t> divisor_override) {
  const char* op = "bigkern::avg_pool2d_backward";
  const int64_t no_dilation[2] = {1, 1};
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, no_dilation, ceil_mode, op);
  check_divisor(divisor_override, op);
  check_grad_output(grad_output, g, self, op);
  at::Tensor grad_in = empty_like_layout(self, {g.N, g.C, g.H, g.W}, g, self.scalar_type());
  if (g.N > 0) kernels().avg_pool2d_backward(in_layout(grad_output, g), grad_in, g, count_include_pad, divisor_override);
  return grad_in;
}

at::Tensor adaptive_avg_pool2d(const at::Tensor& self, at::IntArrayRef output_size) {
  const Pool2dGeometry g = adaptive_geometry(self, output_size, "bigkern::adaptive_avg_pool2d");
  const at::Tensor x = in_layout(self, g);
  at::Tensor out = empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, x.scalar_type());
  if (g.N > 0) kernels().adaptive_avg_pool2d(x, out, g);
  return out;
}

at::Tensor adaptive_avg_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& self) {
  const char* op = "bigkern::adaptive_avg_pool2d_backward";
  TORCH_CHECK(grad_output.dim() == 4, op, ": expected a 4-D grad_output, got shape ", grad_output.sizes());
  const Pool2dGeometry g = adaptive_geometry(self, {grad_output.size(2), grad_output.size(3)}, op);
  check_grad_output(grad_output, g, self, op);
  at::Tensor grad_in = empty_like_layout(self, {g.N, g.C, g.H, g.W}, g, self.scalar_type());
  if (g.N > 0) kernels().adaptive_avg_pool2d_backward(in_layout(grad_output, g), grad_in, g);
  return grad_in;
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d(const at::Tensor& self, at::IntArrayRef output_size,
                                                       bool compute_indices) {
  const Pool2dGeometry g = adaptive_geometry(self, output_size, "bigkern::adaptive_max_pool2d");
  const at::Tensor x = in_layout(self, g);
  at::Tensor out = empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, x.scalar_type());
  at::Tensor indices = compute_indices ? empty_like_layout(x, {g.N, g.C, g.OH, g.OW}, g, at::kLong)
                                       : at::empty({0}, x.options().dtype(at::kLong));
  if (g.N > 0) kernels().adaptive_max_pool2d(x, out, compute_indices ? &indices : nullptr, g);
  return {out, indices};
}

at::Tensor adaptive_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& self,
                                        const at::Tensor& indices) {
  const char* op = "bigkern::adaptive_max_pool2d_backward";
  TORCH_CHECK(grad_output.dim() == 4, op, ": expected a 4-D grad_output, got shape ", grad_output.sizes());
  const Pool2dGeometry g = adaptive_geometry(self, {grad_output.size(2), grad_output.size(3)}, op);
  check_grad_output(grad_output, g, self, op);
  check_indices(indices, g, self, op);
  at::Tensor grad_in = empty_like_layout(self, {g.N, g.C, g.H, g.W}, g, self.scalar_type());
  if (g.N > 0) kernels().max_backward(in_layout(grad_output, g), in_layout(indices, g), grad_in, g);
  return grad_in;
}

}  // namespace
}  // namespace bigkern::cpu

TORCH_LIBRARY_IMPL(bigkern, CPU, m) {
  using namespace bigkern::cpu;
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("avg_pool2d", &avg_pool2d);
  m.impl("avg_pool2d_backward", &avg_pool2d_backward);
  m.impl("adaptive_avg_pool2d", &adaptive_avg_pool2d);
  m.impl("adaptive_avg_pool2d_backward", &adaptive_avg_pool2d_backward);
  m.impl("adaptive_max_pool2d", &adaptive_max_pool2d);
  m.impl("adaptive_max_pool2d_backward", &adaptive_max_pool2d_backward);
}
