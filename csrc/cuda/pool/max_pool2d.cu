// Max pooling over dilated windows (torch.nn.functional.max_pool2d) and its backward, which gathers
// into each input element the gradients of the outputs whose index names it (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common/pool_geometry.h"
#include "cuda/pool/pool_common.cuh"

namespace bigkern::cuda_pool {
namespace {

// First tap at or after position 0 of taps start, start + step, ...
template <typename index_t>
C10_HOST_DEVICE inline index_t first_tap_in_bounds(index_t start, index_t step) {
  return start >= 0 ? start : start + (-start + step - 1) / step * step;
}

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes, bool kWriteIndices>
struct MaxPool2dForward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* input;
  scalar_t* output;
  int64_t* indices;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.OH, p.OW);
    const index_t h_start = pos.y * p.sh - p.ph;
    const index_t w_start = pos.x * p.sw - p.pw;
    const index_t h_first = first_tap_in_bounds(h_start, p.dh);
    const index_t w_first = first_tap_in_bounds(w_start, p.dw);
    const Span<index_t> rows{h_first, std::min(h_start + (p.kh - 1) * p.dh + 1, p.H)};
    const Span<index_t> cols{w_first, std::min(w_start + (p.kw - 1) * p.dw + 1, p.W)};
    const PlaneView<index_t> in = plane_view<kChannelsLast>(pos, p.C, p.H, p.W);
    // The index starts at the first in-bounds tap. A window with no in-bounds tap at all (possible
    // only with dilation) keeps -inf and this out-of-window index, as torch does. Widened: h_first
    // may exceed H there.
    const int64_t first_index = static_cast<int64_t>(h_first) * p.W + w_first;
    acc best[kLanes];
    int64_t best_index[kLanes];
    max_over_taps(input, in, p.W, rows, p.dh, cols, p.dw, first_index, best, best_index);
    const index_t out_offset = plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW).offset(pos.y, pos.x);
    store_rounded(output + out_offset, best);
    if constexpr (kWriteIndices) store_lanes(indices + out_offset, best_index);
  }
};

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes>
struct MaxPool2dBackward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* grad_output;
  const int64_t* indices;
  scalar_t* grad_input;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.H, p.W);
    acc sum[kLanes] = {};
    add_routed_grads(grad_output, indices, plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW),
                     covering_windows(pos.y, p.ph, (p.kh - 1) * p.dh + 1, p.sh, p.OH),
                     covering_windows(pos.x, p.pw, (p.kw - 1) * p.dw + 1, p.sw, p.OW), pos.y * p.W + pos.x, sum);
    store_rounded(grad_input + plane_view<kChannelsLast>(pos, p.C, p.H, p.W).offset(pos.y, pos.x), sum);
  }
};

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef kernel_size,
                                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode, bool compute_indices) {
  constexpr const char* kOp = "bigkern::max_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, dilation, ceil_mode, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const at::Tensor input = self.contiguous(memory_format(g));
  at::Tensor output = empty_pooled(g, input.options());
  at::Tensor indices = empty_indices(g, input.options(), compute_indices);
  if (g.N == 0) return {output, indices};
  const void* written_indices = compute_indices ? indices.const_data_ptr() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::max_pool2d", [&] {
    with_bool(compute_indices, [&](auto write) {
      launch_items<MaxPool2dForward, scalar_t, decltype(write)::value>(
          g, output, input, {input.const_data_ptr(), output.const_data_ptr(), written_indices},
          input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), indices.mutable_data_ptr<int64_t>());
    });
  });
  return {output, indices};
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self, const at::Tensor& indices,
                                    c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    c10::IntArrayRef dilation, bool ceil_mode) {
  constexpr const char* kOp = "bigkern::max_pool2d_backward";
  check_cuda(grad_output, kOp, "grad_output");
  check_cuda(self, kOp, "self");
  check_cuda(indices, kOp, "indices");
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, dilation, ceil_mode, kOp);
  check_grad_output(grad_output, g, self, kOp);
  check_indices(indices, g, self, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  at::Tensor grad_input = at::empty(self.sizes(), self.options(), format);
  if (g.N == 0) return grad_input;
  const at::Tensor grad_output_in_format = grad_output.contiguous(format);
  const at::Tensor indices_in_format = indices.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "bigkern::max_pool2d_backward", [&] {
    launch_items<MaxPool2dBackward, scalar_t>(
        g, grad_input, grad_output_in_format,
        {grad_output_in_format.const_data_ptr(), indices_in_format.const_data_ptr(), grad_input.const_data_ptr()},
        grad_output_in_format.const_data_ptr<scalar_t>(), indices_in_format.const_data_ptr<int64_t>(),
        grad_input.mutable_data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace
}  // namespace bigkern::cuda_pool

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("max_pool2d", &bigkern::cuda_pool::max_pool2d_cuda);
  m.impl("max_pool2d_backward", &bigkern::cuda_pool::max_pool2d_backward_cuda);
}
