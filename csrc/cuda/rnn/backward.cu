// The CUDA recurrent backward's per-step kernel: the pointwise gate gradients from the workspace
// the forward saved (no gate is recomputed). The products around it (d_gates @ w_hh per step,
// the weight gradients once over all steps) are cuBLAS GEMMs issued by rnn.cpp.
#include <cuda_runtime.h>

#include "cuda/rnn/rnn_device.cuh"

namespace bigkern::cuda::rnn {
namespace {

template <typename T, int MODE>
__global__ void gates_backward_kernel(BackwardParams p) {
  constexpr int G = gate_count(MODE);
  const int64_t H = p.hidden, total = p.rows * H;
  T* grad_x = static_cast<T*>(p.grad_x);
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / H, j = idx % H, row = p.row_offset + b;
    const float* ws = p.ws + row * p.ws_width + j;
    const float dh = p.dh[idx];
    float d[4], rec[4];
    if (MODE == 0) {
      const float i = ws[0], f = ws[H], g = ws[2 * H], o = ws[3 * H], c1 = ws[4 * H];
      const float tc = tanhf(c1);
      const float dc = p.dc[idx] + dh * o * (1.f - tc * tc);
      d[0] = dc * g * i * (1.f - i);
      d[1] = dc * p.c_prev[idx] * f * (1.f - f);
      d[2] = dc * i * (1.f - g * g);
      d[3] = dh * tc * o * (1.f - o);
      p.dc[idx] = dc * f;
      for (int q = 0; q < 4; ++q) rec[q] = d[q];
    } else if (MODE == 1) {
      const float r = ws[0], z = ws[H], n = ws[2 * H], hn = ws[3 * H];
      const float d_pn = dh * (1.f - z) * (1.f - n * n);
      d[0] = d_pn * hn * r * (1.f - r);
      d[1] = dh * (p.h_prev[idx] - n) * z * (1.f - z);
      d[2] = d_pn;
      rec[0] = d[0];
      rec[1] = d[1];
      rec[2] = d_pn * r;
      p.direct[idx] = dh * z;
    } else {
      const float h1 = ws[0];
      d[0] = rec[0] = MODE == 2 ? dh * (1.f - h1 * h1) : (h1 > 0.f ? dh : 0.f);
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      grad_x[row * G * H + g * H + j] = from_float<T>(d[g]);
      p.d_rec[row * G * H + g * H + j] = rec[g];
    }
  }
}

}  // namespace

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
