// Average pooling (torch.nn.functional.avg_pool2d) and its backward, which gathers into each input
// element grad/divisor from every output whose window contains it (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "common/pool_geometry.h"
#include "cuda/pool/pool_common.cuh"

namespace bigkern::cuda_pool {
namespace {

struct AvgDivisor {
  int64_t override_value;
  bool has_override;
  bool count_include_pad;
};

// One output's window clipped to the input, and the size it had before clipping: that size is
// the window cut only at the padded border H + ph (ceil_mode may run a window past it), which is
// what count_include_pad divides by.
template <typename index_t>
struct AvgWindow {
  Span<index_t> rows, cols;
  index_t padded_size;
};

template <typename index_t>
C10_HOST_DEVICE inline AvgWindow<index_t> avg_window(index_t oh, index_t ow, const PoolParams<index_t>& p) {
  const index_t h_start = oh * p.sh - p.ph;
  const index_t w_start = ow * p.sw - p.pw;
  const index_t h_stop = std::min(h_start + p.kh, p.H + p.ph);
  const index_t w_stop = std::min(w_start + p.kw, p.W + p.pw);
  return {{std::max(h_start, index_t{0}), std::min(h_stop, p.H)},
          {std::max(w_start, index_t{0}), std::min(w_stop, p.W)},
          (h_stop - h_start) * (w_stop - w_start)};
}

template <typename acc, typename index_t>
C10_HOST_DEVICE inline acc avg_divisor(const AvgWindow<index_t>& window, const AvgDivisor& divisor) {
  if (divisor.has_override) return static_cast<acc>(divisor.override_value);
  return static_cast<acc>(divisor.count_include_pad ? window.padded_size : window.rows.size() * window.cols.size());
}

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes>
struct AvgPool2dForward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* input;
  scalar_t* output;
  AvgDivisor divisor;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.OH, p.OW);
    const AvgWindow<index_t> window = avg_window(pos.y, pos.x, p);
    acc sum[kLanes] = {};
    sum_window(input, plane_view<kChannelsLast>(pos, p.C, p.H, p.W), window.rows, window.cols, sum);
    // A window entirely in the padding has a clipped area of 0 (0/0 without count_include_pad);
    // torch writes 0 for it.
    if (window.rows.begin < window.rows.end && window.cols.begin < window.cols.end) {
      divide_lanes(sum, avg_divisor<acc>(window, divisor));
    }
    store_rounded(output + plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW).offset(pos.y, pos.x), sum);
  }
};

template <typename scalar_t, typename index_t, bool kChannelsLast, int kLanes>
struct AvgPool2dBackward {
  using index_type = index_t;
  using acc = acc_t<scalar_t>;

  const scalar_t* grad_output;
  scalar_t* grad_input;
  AvgDivisor divisor;
  PoolParams<index_t> p;

  C10_HOST_DEVICE void operator()(index_t linear) const {
    const Position<index_t> pos = position_of<kChannelsLast, kLanes>(linear, p.C, p.H, p.W);
    // Every output in these ranges contains the element after clipping too: its span starts at or
    // before the element and ends after it, and clipping cuts only at 0 (at or before any element)
    // and at H and H + ph (W and W + pw), both after any element.
    const Span<index_t> rows = covering_windows(pos.y, p.ph, p.kh, p.sh, p.OH);
    const Span<index_t> cols = covering_windows(pos.x, p.pw, p.kw, p.sw, p.OW);
    const PlaneView<index_t> out = plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW);

    acc sum[kLanes] = {};
    for (index_t oh = rows.begin; oh < rows.end; ++oh) {
      for (index_t ow = cols.begin; ow < cols.end; ++ow) {
        add_divided(grad_output + out.offset(oh, ow), avg_divisor<acc>(avg_window(oh, ow, p), divisor), sum);
      }
    }
    store_rounded(grad_input + plane_view<kChannelsLast>(pos, p.C, p.H, p.W).offset(pos.y, pos.x), sum);
  }
};

AvgDivisor avg_divisor_options(std::optional<int64_t> divisor_override, bool count_include_pad) {
  return {divisor_override.value_or(0), divisor_override.has_value(), count_include_pad};
}

// avg_pool2d has no dilation; window_geometry then also limits padding to half the kernel.
constexpr int64_t kNoDilation[2] = {1, 1};

at::Tensor avg_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  constexpr const char* kOp = "bigkern::avg_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, kNoDilation, ceil_mode, kOp);
  check_divisor(divisor_override, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const at::Tensor input = self.contiguous(memory_format(g));
  at::Tensor output = empty_pooled(g, input.options());
  if (g.N == 0) return output;
  const AvgDivisor divisor = avg_divisor_options(divisor_override, count_include_pad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::avg_pool2d", [&] {
    launch_items<AvgPool2dForward, scalar_t>(g, output, input, {input.const_data_ptr(), output.const_data_ptr()},
                                             input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(),
                                             divisor);
  });
  return output;
}

at::Tensor avg_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                                    c10::IntArrayRef kernel_size, c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  constexpr const char* kOp = "bigkern::avg_pool2d_backward";
  check_cuda(grad_output, kOp, "grad_output");
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = window_geometry(self, kernel_size, stride, padding, kNoDilation, ceil_mode, kOp);
  check_divisor(divisor_override, kOp);
  check_grad_output(grad_output, g, self, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  at::Tensor grad_input = at::empty(self.sizes(), self.options(), format);
  if (g.N == 0) return grad_input;
  const at::Tensor grad_output_in_format = grad_output.contiguous(format);
  const AvgDivisor divisor = avg_divisor_options(divisor_override, count_include_pad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, self.scalar_type(), "bigkern::avg_pool2d_backward", [&] {
    launch_items<AvgPool2dBackward, scalar_t>(
        g, grad_input, grad_output_in_format, {grad_output_in_format.const_data_ptr(), grad_input.const_data_ptr()},
        grad_output_in_format.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), divisor);
  });
  return grad_input;
}

}  // namespace
}  // namespace bigkern::cuda_pool

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("avg_pool2d", &bigkern::cuda_pool::avg_pool2d_cuda);
  m.impl("avg_pool2d_backward", &bigkern::cuda_pool::avg_pool2d_backward_cuda);
}
