// The CUDA recurrent kernels that run one step: the fused forward step (the per-step path, the
// projection's path and the cell) and the pointwise backward. In a header so that the SIMT
// emulator of tests/cuda_host can run them on the CPU (tests/cuda_host/rnn); the persistent
// kernel, which needs a grid-wide barrier the emulator cannot provide, is in forward.cu and
// shares step_tile with them.
#pragma once

#include <algorithm>
#include <type_traits>

#include "cuda/rnn/rnn_device.cuh"

namespace bigkern::cuda::rnn {

constexpr int kThreads = 256;

template <typename T, int MODE>
__device__ void carry_rows(const StepParams& p, const float* h_prev, float* h_next, int64_t rows, int64_t unit0,
                           int64_t units) {
  // Sequences without this step (ended, or not begun in reverse) keep their state.
  if (p.h_raw != nullptr) return;
  const int64_t P = p.out_size;
  for (int64_t idx = threadIdx.x; idx < (p.batch - rows) * units; idx += blockDim.x) {
    const int64_t b = rows + idx / units, j = unit0 + idx % units;
    h_next[b * P + j] = h_prev[b * P + j];
  }
}

// One step's product and gate math for a block's units: on tensor cores for float16/bfloat16
// layers (sums: kMmaRows x G x padded units floats of shared memory), else step_tile's FMA path
// (float32, and the cells, whose two products stay on the FMA path).
template <typename T, int MODE>
__device__ __forceinline__ void recurrent_step(const StepParams& p, const GateRows<T>& w_hh, const GateRows<T>& w_ih,
                                               const T* x, const float* h_prev, float* h_next, int64_t row_offset,
                                               int64_t rows, int64_t unit0, int64_t units, float* sums) {
  if constexpr (!std::is_same_v<T, float>) {
    if (x == nullptr) {
      step_tile_mma<T, MODE>(p, w_hh, h_prev, h_next, row_offset, rows, unit0, units, sums);
      return;
    }
  }
  step_tile<T, MODE>(p, w_hh, w_ih, x, h_prev, h_next, row_offset, rows, unit0, units);
}

// Dynamic shared memory of a step for `units` units per block: the tensor-core path's staged sums.
template <typename T>
__host__ __device__ constexpr size_t step_shared_bytes(int mode, int64_t units) {
  return std::is_same_v<T, float> ? 0 : static_cast<size_t>(mma_sums_bytes(mode, units));
}

template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads) step_kernel(StepParams p, int64_t row_offset, int64_t rows, int cur,
                                                        int64_t units) {
  const int64_t unit0 = blockIdx.x * units, n = std::min<int64_t>(units, p.hidden - unit0);
  const GateRows<T> w_hh{static_cast<const T*>(p.w_hh), p.out_size, false, units, p.hidden, unit0};
  const GateRows<T> w_ih{static_cast<const T*>(p.w_ih), p.input_size, false, units, p.hidden, unit0};
  extern __shared__ __align__(16) unsigned char rnn_shared[];
  const float* h_prev = p.h_state[cur];
  float* h_next = p.h_state[1 - cur];
  recurrent_step<T, MODE>(p, w_hh, w_ih, static_cast<const T*>(p.input), h_prev, h_next, row_offset, rows, unit0, n,
                          reinterpret_cast<float*>(rnn_shared));
  carry_rows<T, MODE>(p, h_prev, h_next, rows, unit0, n);
}

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
BIGKERN_RNN_UNROLL
    for (int g = 0; g < G; ++g) {
      grad_x[row * G * H + g * H + j] = from_float<T>(d[g]);
      p.d_rec[row * G * H + g * H + j] = rec[g];
    }
  }
}

}  // namespace bigkern::cuda::rnn
