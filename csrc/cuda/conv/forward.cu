// Launchers of the CUDA convolution forward: the tensor-core implicit GEMM (float16/bfloat16 with
// C/G a multiple of 8), the depthwise kernel, and the SIMT implicit GEMM for everything else.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/conv/conv_mma.cuh"

namespace bigkern::cuda::conv {


namespace {

unsigned blocks_for(int64_t work, int per_block) {
  return static_cast<unsigned>(std::min<int64_t>((work + per_block - 1) / per_block, 65535 * 32));
}

template <typename T>
void forward_typed(const ForwardParams& p, cudaStream_t stream) {
  const Geometry& g = p.g;
  const int64_t rows = static_cast<int64_t>(g.N) * g.P * g.Q;
  if (g.groups == g.C && g.groups == g.K && g.C > 1) {
    depthwise_forward_kernel<T><<<blocks_for(rows * g.C, 256), 256, 0, stream>>>(p);
    return;
  }
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    if (g.Cg % 8 == 0 && g.Cg >= 16) {
      const dim3 grid(static_cast<unsigned>((rows + kMmaRows - 1) / kMmaRows), (g.Kg + kMmaCols - 1) / kMmaCols, g.groups);
      forward_mma_kernel<T><<<grid, kMmaThreads, mma_shared_bytes(), stream>>>(p);
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>((rows + kTile - 1) / kTile), (g.Kg + kTile - 1) / kTile, g.groups);
  forward_simt_kernel<T><<<grid, dim3(kThreadsX, kThreadsY), sizeof(SimtShared<acc_t<T>>), stream>>>(p);
}

}  // namespace

void launch_forward(const ForwardParams& p, Dtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat: forward_typed<float>(p, stream); break;
    case Dtype::kDouble: forward_typed<double>(p, stream); break;
    case Dtype::kHalf: forward_typed<__half>(p, stream); break;
    case Dtype::kBFloat16: forward_typed<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace bigkern::cuda::conv
