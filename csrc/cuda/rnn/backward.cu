// The CUDA recurrent backward's per-step kernel: the pointwise gate gradients from the workspace
// the forward saved (no gate is recomputed). The products around it (d_gates @ w_hh per step,
// the weight gradients once over all steps) are cuBLAS GEMMs issued by rnn.cpp.
#include <cuda_runtime.h>

#include "cuda/rnn/rnn_kernels.cuh"

namespace bigkern::cuda::rnn {

void launch_gates_backward(const BackwardParams& p, cudaStream_t stream) {
  const int64_t total = p.rows * p.hidden;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535));
  auto launch = [&](auto type_tag) {
    using T = decltype(type_tag);
    switch (p.mode) {
      case 0: gates_backward_kernel<T, 0><<<blocks, 256, 0, stream>>>(p); break;
      case 1: gates_backward_kernel<T, 1><<<blocks, 256, 0, stream>>>(p); break;
      case 2: gates_backward_kernel<T, 2><<<blocks, 256, 0, stream>>>(p); break;
      default: gates_backward_kernel<T, 3><<<blocks, 256, 0, stream>>>(p); break;
    }
  };
  switch (p.dtype) {
    case Dtype::kFloat: launch(float{}); break;
    case Dtype::kHalf: launch(__half{}); break;
    default: launch(__nv_bfloat16{}); break;
  }
}

}  // namespace bigkern::cuda::rnn
