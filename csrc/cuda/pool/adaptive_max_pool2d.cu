// Adaptive max pooling (torch.nn.functional.adaptive_max_pool2d) and its backward, which gathers
// into each input element the gradients of the covering outputs whose index names it (no atomics).
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
    const Span<index_t> rows = adaptive_span(pos.y, p.H, p.OH);
    const Span<index_t> cols = adaptive_span(pos.x, p.W, p.OW);
    // Starting at the window's first element keeps a window of -inf pointing into itself.
    const int64_t first_index = rows.begin * p.W + cols.begin;
    acc best[kLanes];
    int64_t best_index[kLanes];
    max_over_taps(input, plane_view<kChannelsLast>(pos, p.C, p.H, p.W), p.W, rows, index_t{1}, cols, index_t{1},
                  first_index, best, best_index);
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
    acc sum[kLanes] = {};
    add_routed_grads(grad_output, indices, plane_view<kChannelsLast>(pos, p.C, p.OH, p.OW),
                     adaptive_span(pos.y, p.OH, p.H), adaptive_span(pos.x, p.OW, p.W), pos.y * p.W + pos.x, sum);
    store_rounded(grad_input + plane_view<kChannelsLast>(pos, p.C, p.H, p.W).offset(pos.y, pos.x), sum);
  }
};

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool2d_cuda(const at::Tensor& self, c10::IntArrayRef output_size,
                                                            bool compute_indices) {
  constexpr const char* kOp = "bigkern::adaptive_max_pool2d";
  check_cuda(self, kOp, "self");
  const Pool2dGeometry g = adaptive_geometry(self, output_size, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const at::Tensor input = self.contiguous(memory_format(g));
  at::Tensor output = empty_pooled(g, input.options());
  at::Tensor indices = empty_indices(g, input.options(), compute_indices);
  if (g.N == 0) return {output, indices};
  const void* written_indices = compute_indices ? indices.const_data_ptr() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "bigkern::adaptive_max_pool2d", [&] {
    with_bool(compute_indices, [&](auto write) {
      launch_items<AdaptiveMaxPool2dForward, scalar_t, decltype(write)::value>(
          g, output, input, {input.const_data_ptr(), output.const_data_ptr(), written_indices},
          input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), indices.mutable_data_ptr<int64_t>());
    });
  });
  return {output, indices};
}

at::Tensor adaptive_max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                                             const at::Tensor& indices) {
  constexpr const char* kOp = "bigkern::adaptive_max_pool2d_backward";
  check_cuda(grad_output, kOp, "grad_output");
  check_cuda(self, kOp, "self");
  check_cuda(indices, kOp, "indices");
  const Pool2dGeometry g = adaptive_backward_geometry(grad_output, self, kOp);
  check_indices(indices, g, self, kOp);
  const c10::cuda::CUDAGuard device_guard(self.device());
  const c10::MemoryFormat format = memory_format(g);
  at::Tensor grad_input = at::empty(self.sizes(), self.options(), format);
  if (g.N == 0) return grad_input;
  const at::Tensor grad_output_in_format = grad_output.contiguous(format);
  const at::Tensor indices_in_format = indices.contiguous(format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, self.scalar_type(), "bigkern::adaptive_max_pool2d_backward", [&] {
        launch_items<AdaptiveMaxPool2dBackward, scalar_t>(
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
  m.impl("adaptive_max_pool2d", &bigkern::cuda_pool::adaptive_max_pool2d_cuda);
  m.impl("adaptive_max_pool2d_backward", &bigkern::cuda_pool::adaptive_max_pool2d_backward_cuda);
}
