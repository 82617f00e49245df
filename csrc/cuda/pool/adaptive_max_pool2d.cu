// Adaptive max pooling (torch.nn.functional.adaptive_max_pool2d) and its backward, which gathers
// into each input element the gradients of the covering outputs whose index names it (no atomics).
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

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes, bool kWriteIndices>
struct AdaptiveMaxPool2dForward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* input;
  scalar_t* output;
  int64_t* indices;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.OH, p.OW);
    const index_t h_begin = adaptive_begin(pos.y, p.H, p.OH);
    const index_t h_end = adaptive_end(pos.y, p.H, p.OH);
    const index_t w_begin = adaptive_begin(pos.x, p.W, p.OW);
    const index_t w_end = adaptive_end(pos.x, p.W, p.OW);
    const PlaneView<index_t> in = plane_view<kChannelsLast>(pos, p.C, p.H, p.W);

    // Starting at the window's first element keeps a window of -inf pointing into itself.
    const int64_t first_index = h_begin * p.W + w_begin;
    acc best[kLanes];
    int64_t best_index[kLanes];
    BIGKERN_UNROLL
    for (int lane = 0; lane < kLanes; ++lane) {
      best[lane] = -std::numeric_limits<acc>::infinity();
      best_index[lane] = first_index;
    }
    // Row-major scan fixes which tie and which NaN win.
    for (index_t ih = h_begin; ih < h_end; ++ih) {
      for (index_t iw = w_begin; iw < w_end; ++iw) {
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
struct AdaptiveMaxPool2dBackward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* grad_output;
  const int64_t* indices;
  scalar_t* grad_input;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.H, p.W);
    const index_t oh_begin = adaptive_begin(pos.y, p.OH, p.H);
    const index_t oh_end = adaptive_end(pos.y, p.OH, p.H);
    const index_t ow_begin = adaptive_begin(pos.x, p.OW, p.W);
    const index_t ow_end = adaptive_end(pos.x, p.OW, p.W);
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
void launch_adaptive_max_pool2d_forward(const at::Tensor& input, const at::Tensor& output, const at::Tensor& indices,
                                        const Pool2dGeometry& g, bool write_indices) {
  const bool vectorized = nhwc_vectorizable<scalar_t>(
      g, {input.const_data_ptr(), output.const_data_ptr(), write_indices ? indices.const_data_ptr() : nullptr});
  with_index_type(fits_int32(g, {input.numel(), output.numel()}), [&](auto index_zero) {
    using index_t = decltype(index_zero);
    with_layout<scalar_t>(g.channels_last, vectorized, [&](auto channels_last, auto lanes) {
      with_bool(write_indices, [&](auto write) {
        using Item = AdaptiveMaxPool2dForward<scalar_t, index_t, decltype(channels_last)::value,
                                              decltype(lanes)::value, decltype(write)::value>;
        launch_work_items(Item{input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(),
                               indices.mutable_data_ptr<int64_t>(), pool_params<index_t>(g)},
                          output.numel() / decltype(lanes)::value);
      });
    });
  });
}

template <typename scalar_t>
void launch_adaptive_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                                         const at::Tensor& grad_input, const Pool2dGeometry& g) {
  const bool vectorized = nhwc_vectorizable<scalar_t>(
      g, {grad_output.const_data_ptr(), indices.const_data_ptr(), grad_input.const_data_ptr()});
  with_index_type(fits_int32(g, {grad_input.numel(), grad_output.numel()}), [&](auto index_zero) {
    using index_t = decltype(index_zero);
    with_layout<scalar_t>(g.channels_last, vectorized, [&](auto channels_last, auto lanes) {
      using Item =
          AdaptiveMaxPool2dBackward<scalar_t, index_t, decltype(channels_last)::value, decltype(lanes)::value>;
      launch_work_items(Item{grad_output.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(),
                             grad_input.mutable_data_ptr<scalar_t>(), pool_params<index_t>(g)},
                        grad_input.numel() / decltype(lanes)::value);
    });
  });
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef output_size,
                                                            bool compute_indices) {
  constexpr const char* kOp = "bigkern::adaptive_max_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = adaptive_geometry(self, output_size, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  const at::Tensor input = self.contiguous(format);
  at::Tensor output = at::empty({g.N, g.C, g.OH, g.OW}, input.options(), format);
  at::Tensor indices = compute_indices
                           ? at::empty({g.N, g.C, g.OH, g.OW}, input.options().dtype(at::kLong), format)
                           : at::empty({0}, input.options().dtype(at::kLong));
  if (g.N == 0) return {output, indices};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::adaptive_max_pool2d", [&] {
    launch_adaptive_max_pool2d_forward<scalar_t>(input, output, indices, g, compute_indices);
  });
  return {output, indices};
}

at::Tensor adaptive_max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                                             const at::Tensor& indices) {
  constexpr const char* kOp = "bigkern::adaptive_max_pool2d_backward";
  check_cuda(grad_output, kOp, "grad_output");
  check_cuda(self, kOp, "self");
  check_cuda(indices, kOp, "indices");
  TORCH_CHECK(grad_output.dim() == 4, kOp, ": expected a 4-D grad_output, got ", grad_output.dim(), "-D of shape ",
              grad_output.sizes());
  // The output size is not an argument of the backward: grad_output carries it.
  const Pool2dGeometry g = adaptive_geometry(self, grad_output.sizes().slice(2), kOp);
  check_grad_output(grad_output, g, self, kOp);
  check_indices(indices, g, self, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  at::Tensor grad_input = at::empty(self.sizes(), self.options(), format);
  if (g.N == 0) return grad_input;
  const at::Tensor grad_output_in_format = grad_output.contiguous(format);
  const at::Tensor indices_in_format = indices.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, self.scalar_type(), "bigkern::adaptive_max_pool2d_backward",
      [&] { launch_adaptive_max_pool2d_backward<scalar_t>(grad_output_in_format, indices_in_format, grad_input, g); });
  return grad_input;
}

}  // namespace
}  // namespace bigkern::cuda_pool

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("adaptive_max_pool2d", &bigkern::cuda_pool::adaptive_max_pool2d_cuda);
  m.impl("adaptive_max_pool2d_backward", &bigkern::cuda_pool::adaptive_max_pool2d_backward_cuda);
}
