// The CPU pooling kernels as a table of functions, one table per instruction set
// (pool_kernels_avx2.cpp, pool_kernels_baseline.cpp); pool.cpp picks the table once, at run
// time, from what the processor supports. Tensors arrive contiguous in the layout of `g`.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "common/pool_geometry.h"

namespace bigkern::cpu {

struct PoolKernelTable {
  // indices == nullptr: inference, no index written.
  void (*max_pool2d)(const at::Tensor& x, at::Tensor& out, at::Tensor* indices, const Pool2dGeometry& g);
  void (*avg_pool2d)(const at::Tensor& x, at::Tensor& out, const Pool2dGeometry& g, bool count_include_pad,
                     std::optional<int64_t> divisor_override);
  void (*adaptive_avg_pool2d)(const at::Tensor& x, at::Tensor& out, const Pool2dGeometry& g);
  void (*adaptive_max_pool2d)(const at::Tensor& x, at::Tensor& out, at::Tensor* indices, const Pool2dGeometry& g);
  // Both max pools share one backward: gradients follow the stored indices.
  void (*max_backward)(const at::Tensor& grad_out, const at::Tensor& indices, at::Tensor& grad_in,
                       const Pool2dGeometry& g);
  void (*avg_pool2d_backward)(const at::Tensor& grad_out, at::Tensor& grad_in, const Pool2dGeometry& g,
                              bool count_include_pad, std::optional<int64_t> divisor_override);
  void (*adaptive_avg_pool2d_backward)(const at::Tensor& grad_out, at::Tensor& grad_in, const Pool2dGeometry& g);
};

namespace baseline { const PoolKernelTable& pool_kernels(); }
namespace avx2 { const PoolKernelTable& pool_kernels(); }

}  // namespace bigkern::cpu
