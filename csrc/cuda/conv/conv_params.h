// Plain descriptions of a convolution for the CUDA kernels (csrc/cuda/conv/*.cuh) and their host
// (conv.cpp): no ATen, so kernel files compile against CUDA headers only and the SIMT emulator
// (tests/cuda_host) can build them as host C++.
//
// Layouts the host prepares (contract: csrc/schema/conv.cpp):
//   x, grad_z     channels-last contiguous: (N, H, W, C) and (N, P, Q, K)
//   weight        (K, R, S, C/G) contiguous ("KRSC": a filter's channels contiguous per tap)
//   out, residual, pre-activation, grad_input: any strides, given in (n, c, h, w) order
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace bigkern::cuda::conv {

enum class Dtype : int32_t { kFloat = 0, kHalf = 1, kBFloat16 = 2, kDouble = 3 };

struct Geometry {
  int N, C, H, W, K, R, S, P, Q;
  int stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, Cg, Kg;
};

struct Strides {
  int64_t n = 0, c = 0, h = 0, w = 0;
};

struct ForwardParams {
  Geometry g;
  const void* x;
  const void* weight;
  const void* bias;      // (K) or null
  const void* residual;  // or null
  Strides residual_strides;
  void* out;
  Strides out_strides;
  void* pre;             // pre-activation, or null
  Strides pre_strides;
  int activation;        // 0 none, 1 relu, 2 gelu, 3 silu
};

struct BackwardParams {
  Geometry g;
  const void* grad_z;    // (N, P, Q, K) channels-last
  const void* x;
  const void* weight;
  void* grad_input;      // or null
  Strides grad_input_strides;
  void* weight_partial;  // (splits, K, R, S, Cg) partial sums in the accumulation type, or null
  int splits;            // wgrad programs along the pixels
};

void launch_forward(const ForwardParams& p, Dtype dtype, cudaStream_t stream);
void launch_preactivation_grad(const void* grad_output, const void* activation_input, void* grad_z, int64_t count,
                               int activation, Dtype dtype, cudaStream_t stream);
void launch_bias_grad(const void* grad_z, void* grad_bias, int64_t pixels, int K, Dtype dtype, cudaStream_t stream);
void launch_dgrad(const BackwardParams& p, Dtype dtype, cudaStream_t stream);
void launch_wgrad(const BackwardParams& p, Dtype dtype, cudaStream_t stream);
// grad_weight (K, C/G, R, S) in the tensor dtype from the partial sums.
void launch_wgrad_reduce(const BackwardParams& p, void* grad_weight, Dtype dtype, cudaStream_t stream);

}  // namespace bigkern::cuda::conv
