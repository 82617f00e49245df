// Launchers of the CUDA convolution backward: the activation gradient, the bias gradient, dgrad
// and wgrad (SIMT implicit GEMMs, wgrad split over the output pixels) and the split reduction.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/conv/conv_simt.cuh"

namespace bigkern::cuda::conv {
namespace {

unsigned blocks_for(int64_t work, int per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((work + per_block - 1) / per_block, 65535 * 32)));
}

template <typename F>
void by_dtype(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::kFloat: f(float{}); break;
    case Dtype::kDouble: f(double{}); break;
    case Dtype::kHalf: f(__half{}); break;
    case Dtype::kBFloat16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace

void launch_preactivation_grad(const void* grad_output, const void* activation_input, void* grad_z, int64_t count,
                               int activation, Dtype dtype, cudaStream_t stream) {
  by_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    preactivation_grad_kernel<T><<<blocks_for(count, 256), 256, 0, stream>>>(
        static_cast<const T*>(grad_output), static_cast<const T*>(activation_input), static_cast<T*>(grad_z), count,
        activation);
  });
}

void launch_bias_grad(const void* grad_z, void* grad_bias, int64_t pixels, int K, Dtype dtype, cudaStream_t stream) {
  by_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    bias_grad_kernel<T><<<(K + 31) / 32, dim3(32, 8), 32 * 8 * sizeof(acc_t<T>), stream>>>(
        static_cast<const T*>(grad_z), static_cast<T*>(grad_bias), pixels, K);
  });
}

void launch_dgrad(const BackwardParams& p, Dtype dtype, cudaStream_t stream) {
  const Geometry& g = p.g;
  const dim3 grid(static_cast<unsigned>((static_cast<int64_t>(g.N) * g.H * g.W + kTile - 1) / kTile),
                  (g.Cg + kTile - 1) / kTile, g.groups);
  by_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    dgrad_simt_kernel<T><<<grid, dim3(kThreadsX, kThreadsY), sizeof(SimtShared<acc_t<T>>), stream>>>(p);
  });
}

void launch_wgrad(const BackwardParams& p, Dtype dtype, cudaStream_t stream) {
  const Geometry& g = p.g;
  const dim3 grid((g.Kg + kTile - 1) / kTile, (g.Cg + kTile - 1) / kTile,
                  static_cast<unsigned>(g.groups * g.R * g.S * p.splits));
  by_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    wgrad_simt_kernel<T><<<grid, dim3(kThreadsX, kThreadsY), sizeof(SimtShared<acc_t<T>>), stream>>>(p);
  });
}

void launch_wgrad_reduce(const BackwardParams& p, void* grad_weight, Dtype dtype, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.g.K) * p.g.Cg * p.g.R * p.g.S;
  by_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    wgrad_reduce_kernel<T><<<blocks_for(total, 256), 256, 0, stream>>>(p, static_cast<T*>(grad_weight));
  });
}

}  // namespace bigkern::cuda::conv
