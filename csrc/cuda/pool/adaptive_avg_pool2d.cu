// Adaptive average pooling (torch.nn.functional.adaptive_avg_pool2d) and its backward, which
// gathers into each input element grad/area from every output whose window covers it (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/pool_geometry.h"
#include "cuda/pool/pool_common.cuh"

namespace bigkern::cuda_pool {
namespace {

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes>
struct AdaptiveAvgPool2dForward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* input;
  scalar_t* output;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.OH, p.OW);
    const Span<index_t> rows = adaptive_span(pos.y, p.H, p.OH);
    const Span<index_t> cols = adaptive_span(pos.x, p.W, p.OW);
    acc sum[kLanes] = {};
    sum_window(input, plane_view<kChannelsLast>(pos, p.C, p.H, p.W), rows, cols, sum);
    // Adaptive windows are never empty: ceil((o+1)*I/O) > floor(o*I/O).
    divide_lanes(sum, static_cast<acc>(rows.size() * cols.size()));
    store_rounded(output + plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW).offset(pos.y, pos.x), sum);
  }
};

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes>
struct AdaptiveAvgPool2dBackward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* grad_output;
  scalar_t* grad_input;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.H, p.W);
    const Span<index_t> rows = adaptive_span(pos.y, p.OH, p.H);
    const Span<index_t> cols = adaptive_span(pos.x, p.OW, p.W);
    const PlaneView<index_t> out = plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW);

    acc sum[kLanes] = {};
    for (index_t oh = rows.begin; oh < rows.end; ++oh) {
      const index_t window_height = adaptive_span(oh, p.H, p.OH).size();
      for (index_t ow = cols.begin; ow < cols.end; ++ow) {
        const acc area = static_cast<acc>(window_height * adaptive_span(ow, p.W, p.OW).size());
        add_divided(grad_output + out.offset(oh, ow), area, sum);
      }
    }
    store_rounded(grad_input + plane_view<kChannelsLast>(pos, p.C, p.H, p.W).offset(pos.y, pos.x), sum);
  }
};

at::Tensor adaptive_avg_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef output_size) {
  constexpr const char* kOp = "bigkern::adaptive_avg_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = adaptive_geometry(self, output_size, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const at::Tensor input = self.contiguous(memory_format(g));
  at::Tensor output = empty_pooled(g, input.options());
  if (g.N == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::adaptive_avg_pool2d", [&] {
    launch_items<AdaptiveAvgPool2dForward, scalar_t>(
        g, output, input, {input.const_data_ptr(), output.const_data_ptr()}, input.const_data_ptr<scalar_t>(),
        output.mutable_data_ptr<scalar_t>());
  });
  return output;
}

at::Tensor adaptive_avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self) {
  constexpr const char* kOp = "bigkern::adaptive_avg_pool2d_backward";
  check_cuda(grad_output, kOp, "grad_output");
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = adaptive_backward_geometry(grad_output, self, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  at::Tensor grad_input = at::empty(self.sizes(), self.options(), format);
  if (g.N == 0) return grad_input;
  const at::Tensor grad_output_in_format = grad_output.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, self.scalar_type(), "bigkern::adaptive_avg_pool2d_backward", [&] {
        launch_items<AdaptiveAvgPool2dBackward, scalar_t>(
            g, grad_input, grad_output_in_format, {grad_output_in_format.const_data_ptr(), grad_input.const_data_ptr()},
            grad_output_in_format.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>());
      });
  return grad_input;
}

}  // namespace
}  // namespace bigkern::cuda_pool

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("adaptive_avg_pool2d", &bigkern::cuda_pool::adaptive_avg_pool2d_cuda);
  m.impl("adaptive_avg_pool2d_backward", &bigkern::cuda_pool::adaptive_avg_pool2d_backward_cuda);
}
