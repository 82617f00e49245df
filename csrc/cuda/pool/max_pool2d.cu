// Max pooling over dilated windows (torch.nn.functional.max_pool2d) and its backward, which gathers
// into each input element the gradients of the outputs whose index names it (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
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
    const index_t h_end = std::min(h_start + (p.kh - 1) * p.dh + 1, p.H);
    const index_t w_end = std::min(w_start + (p.kw - 1) * p.dw + 1, p.W);
    const PlaneView<index_t> in = plane_view<kChannelsLast>(pos, p.C, p.H, p.W);

    // The index starts at the first in-bounds tap, so a window of -inf (never replaced) still
    // names an element of it. A window with no in-bounds tap at all (possible only with dilation)
    // keeps -inf and this out-of-window index, as torch does. Widened: h_first may exceed H there.
    const int64_t first_index = static_cast<int64_t>(h_first) * p.W + w_first;
    acc best[kLanes];
    int64_t best_index[kLanes];
    BIGKERN_UNROLL
    for (int lane = 0; lane < kLanes; ++lane) {
      best[lane] = -std::numeric_limits<acc>::infinity();
      best_index[lane] = first_index;
    }
    // Row-major scan (kh outer, kw inner) fixes which tie and which NaN win.
    for (index_t ih = h_first; ih < h_end; ih += p.dh) {
      for (index_t iw = w_first; iw < w_end; iw += p.dw) {
        scalar_t tap[kLanes];
        load_lanes(input + in.offset(ih, iw), tap);
        const index_t tap_index = ih * p.W + iw;
        BIGKERN_UNROLL
        for (int lane = 0; lane < kLanes; ++lane) {
          const acc value = static_cast<acc>(tap[lane]);
          if (replaces_max(value, best[lane])) {
            best[lane] = value;
            best_index[lane] = tap_index;
          }
        }
      }
    }
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
    const index_t oh_begin = first_window_covering(pos.y, p.ph, (p.kh - 1) * p.dh + 1, p.sh);
    const index_t oh_end = windows_end_covering(pos.y, p.ph, p.sh, p.OH);
    const index_t ow_begin = first_window_covering(pos.x, p.pw, (p.kw - 1) * p.dw + 1, p.sw);
    const index_t ow_end = windows_end_covering(pos.x, p.pw, p.sw, p.OW);
    const PlaneView<index_t> out = plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW);
    const int64_t own_index = pos.y * p.W + pos.x;

    acc sum[kLanes] = {};
    for (index_t oh = oh_begin; oh < oh_end; ++oh) {
      for (index_t ow = ow_begin; ow < ow_end; ++ow) {
        const index_t offset = out.offset(oh, ow);
        int64_t argmax[kLanes];
        load_lanes(indices + offset, argmax);
        bool any_match = false;
        BIGKERN_UNROLL
        for (int lane = 0; lane < kLanes; ++lane) any_match |= argmax[lane] == own_index;
        // Most windows picked another element: skip their gradient load.
        if (!any_match) continue;
        scalar_t grad[kLanes];
        load_lanes(grad_output + offset, grad);
        BIGKERN_UNROLL
        for (int lane = 0; lane < kLanes; ++lane) {
          if (argmax[lane] == own_index) sum[lane] += static_cast<acc>(grad[lane]);
        }
      }
    }
    store_rounded(grad_input + plane_view<kChannelsLast>(pos, p.C, p.H, p.W).offset(pos.y, pos.x), sum);
  }
};

template <typename scalar_t>
void launch_max_pool2d_forward(const at::Tensor& input, const at::Tensor& output, const at::Tensor& indices,
                               const Pool2dGeometry& g, bool write_indices) {
  const bool vectorized = nhwc_vectorizable<scalar_t>(
      g, {input.const_data_ptr(), output.const_data_ptr(), write_indices ? indices.const_data_ptr() : nullptr});
  with_index_type(fits_int32(g, {input.numel(), output.numel()}), [&](auto index_zero) {
    using index_t = decltype(index_zero);
    with_layout<scalar_t>(g.channels_last, vectorized, [&](auto channels_last, auto lanes) {
      with_bool(write_indices, [&](auto write) {
        using Item = MaxPool2dForward<scalar_t, index_t, decltype(channels_last)::value, decltype(lanes)::value,
                                      decltype(write)::value>;
        launch_work_items(Item{input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(),
                               indices.mutable_data_ptr<int64_t>(), pool_params<index_t>(g)},
                          output.numel() / decltype(lanes)::value);
      });
    });
  });
}

template <typename scalar_t>
void launch_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices, const at::Tensor& grad_input,
                                const Pool2dGeometry& g) {
  const bool vectorized = nhwc_vectorizable<scalar_t>(
      g, {grad_output.const_data_ptr(), indices.const_data_ptr(), grad_input.const_data_ptr()});
  with_index_type(fits_int32(g, {grad_input.numel(), grad_output.numel()}), [&](auto index_zero) {
    using index_t = decltype(index_zero);
    with_layout<scalar_t>(g.channels_last, vectorized, [&](auto channels_last, auto lanes) {
      using Item = MaxPool2dBackward<scalar_t, index_t, decltype(channels_last)::value, decltype(lanes)::value>;
      launch_work_items(Item{grad_output.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(),
                             grad_input.mutable_data_ptr<scalar_t>(), pool_params<index_t>(g)},
                        grad_input.numel() / decltype(lanes)::value);
    });
  });
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef kernel_size,
                                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                                   c10::IntArrayRef dilation, bool ceil_mode, bool compute_indices) {
  constexpr const char* kOp = "bigkern::max_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, dilation, ceil_mode, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  const at::Tensor input = self.contiguous(format);
  at::Tensor output = at::empty({g.N, g.C, g.OH, g.OW}, input.options(), format);
  at::Tensor indices = compute_indices
                           ? at::empty({g.N, g.C, g.OH, g.OW}, input.options().dtype(at::kLong), format)
                           : at::empty({0}, input.options().dtype(at::kLong));
  if (g.N == 0) return {output, indices};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::max_pool2d", [&] {
    launch_max_pool2d_forward<scalar_t>(input, output, indices, g, compute_indices);
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
    launch_max_pool2d_backward<scalar_t>(grad_output_in_format, indices_in_format, grad_input, g);
  });
  return grad_input;
}

}  // namespace
}  // namespace bigkern::cuda_pool

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("max_pool2d", &bigkern::cuda_pool::max_pool2d_cuda);
  m.impl("max_pool2d_backward", &bigkern::cuda_pool::max_pool2d_backward_cuda);
}
