// Schemas of the pooling ops. Each is defined once, here; the CPU and CUDA kernels register
// implementations under their dispatch keys, and bigkern/ops/pool.py registers the fake
// kernels, the autograd formulas and the Triton twins (namespace bigkern_triton) from these.
//
// The ops take 4-D (N, C, H, W) input of any memory layout; the Python layer maps 3-D
// unbatched input and validates arguments with friendlier messages. `compute_indices=false`
// returns an empty index tensor so inference never writes int64 indices.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "schema/schemas.h"

namespace bigkern {

void define_pool_ops(torch::Library& m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode, bool compute_indices) -> (Tensor, Tensor)",
      tags);
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor",
      tags);
  m.def(
      "avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
      "bool count_include_pad, int? divisor_override) -> Tensor",
      tags);
  m.def(
      "avg_pool2d_backward(Tensor grad_output, Tensor self, int[2] kernel_size, int[2] stride, "
      "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor",
      tags);
  m.def("adaptive_avg_pool2d(Tensor self, int[2] output_size) -> Tensor", tags);
  m.def("adaptive_avg_pool2d_backward(Tensor grad_output, Tensor self) -> Tensor", tags);
  m.def(
      "adaptive_max_pool2d(Tensor self, int[2] output_size, bool compute_indices) -> (Tensor, Tensor)",
      tags);
  m.def("adaptive_max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices) -> Tensor", tags);
}

}  // namespace bigkern
