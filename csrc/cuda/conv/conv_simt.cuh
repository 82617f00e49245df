// The CUDA convolution kernels that run on the FMA units: the general implicit GEMMs (forward,
// dgrad, wgrad) for every dtype and configuration, and the pointwise pieces of the backward.
// Headers only, so tests/cuda_host/conv/emulate_conv.cpp runs them on the CPU (SIMT emulator).
//
// Implicit GEMM tiles: a block of 16 x 16 threads owns a 64 x 64 output tile (each thread 4 x 4
// accumulators) and steps the reduction 16 at a time through shared memory (operand tiles stored
// reduction-major, so the inner loop reads 4 consecutive values of each).
//   forward  rows = output pixels, cols = output channels of the group, reduction = (tap, channel)
//            flattened, the KRSC weight order: a first layer's 3 channels x 49 taps is one
//            reduction of 147, not 49 steps padded from 3 channels to 16
//   dgrad    rows = input pixels,  cols = input channels of the group,  reduction = taps x Kg,
//            the source of tap (r, s) the output pixel ((h + top - r*dh) / sh, ...) when exact
//   wgrad    rows = output channels, cols = input channels, one tap per block (grid z), the
//            reduction over this split's share of the output pixels; partial sums per split
// The group is grid z (wgrad: z = (group, tap, split)).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/conv/conv_params.h"

#if defined(__CUDA_ARCH__)
#define BIGKERN_CONV_UNROLL _Pragma("unroll")
#else
#define BIGKERN_CONV_UNROLL
#endif

namespace bigkern::cuda::conv {

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return static_cast<T>(x);
}

template <typename A>
__device__ __forceinline__ A activate(A z, int activation) {
  switch (activation) {
    case 1: return z < A(0) ? A(0) : z;  // NaN stays NaN
    case 2: return A(0.5) * z * (A(1) + erf(z * A(0.70710678118654752440)));
    case 3: return z / (A(1) + exp(-z));
    default: return z;
  }
}

template <typename A>
__device__ __forceinline__ A activation_slope(A a, int activation) {
  if (activation == 1) return a > A(0) ? A(1) : A(0);
  if (activation == 2) {
    return A(0.5) * (A(1) + erf(a * A(0.70710678118654752440))) + a * exp(A(-0.5) * a * a) * A(0.39894228040143267794);
  }
  const A sig = A(1) / (A(1) + exp(-a));
  return sig * (A(1) + a * (A(1) - sig));
}

constexpr int kTile = 64, kStep = 16, kThreadsX = 16, kThreadsY = 16;

// out[row][col] = act(acc + bias + residual) and the pre-activation, through strides.
template <typename T>
__device__ __forceinline__ void store_output(const ForwardParams& p, int pixel, int channel, acc_t<T> z) {
  const Geometry& g = p.g;
  const int n = pixel / (g.P * g.Q), pq = pixel % (g.P * g.Q), oh = pq / g.Q, ow = pq % g.Q;
  auto at = [&](const Strides& s) { return n * s.n + channel * s.c + oh * s.h + ow * s.w; };
  if (p.bias != nullptr) z += to_acc(static_cast<const T*>(p.bias)[channel]);
  if (p.residual != nullptr) z += to_acc(static_cast<const T*>(p.residual)[at(p.residual_strides)]);
  if (p.pre != nullptr) static_cast<T*>(p.pre)[at(p.pre_strides)] = from_acc<T>(z);
  static_cast<T*>(p.out)[at(p.out_strides)] = from_acc<T>(activate(z, p.activation));
}

// The shared 64 x 64 tile product: acc[i][j] += sum_k a_tile[k][ty*4 + i] * b_tile[k][tx*4 + j].
template <typename A>
__device__ __forceinline__ void tile_fma(const A (*a_tile)[kTile], const A (*b_tile)[kTile], A (&acc)[4][4]) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  BIGKERN_CONV_UNROLL
  for (int k = 0; k < kStep; ++k) {
    A a[4], b[4];
    BIGKERN_CONV_UNROLL
    for (int i = 0; i < 4; ++i) a[i] = a_tile[k][ty * 4 + i], b[i] = b_tile[k][tx * 4 + i];
    BIGKERN_CONV_UNROLL
    for (int i = 0; i < 4; ++i)
      BIGKERN_CONV_UNROLL
      for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
  }
}

// Shared memory of the SIMT kernels: two 16 x 64 operand tiles in the accumulation type, in the
// dynamic shared memory every conv kernel declares (the emulator's test program defines it).
template <typename A>
struct SimtShared {
  A a[kStep][kTile];
  A b[kStep][kTile];
};

extern __shared__ __align__(16) unsigned char conv_shared[];

template <typename A>
__device__ __forceinline__ SimtShared<A>* simt_shared() {
  return reinterpret_cast<SimtShared<A>*>(conv_shared);
}

template <typename T>
__global__ void __launch_bounds__(256) forward_simt_kernel(ForwardParams p) {
  auto* shared = simt_shared<acc_t<T>>();
  using A = acc_t<T>;
  const Geometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  const int group = blockIdx.z, tid = threadIdx.y * kThreadsX + threadIdx.x;
  const int row0 = blockIdx.x * kTile, col0 = blockIdx.y * kTile, rows = g.N * g.P * g.Q;
  A acc[4][4] = {};
  const int depth = g.R * g.S * g.Cg;  // the reduction, (tap, channel) flattened: no padding for few channels
  for (int j0 = 0; j0 < depth; j0 += kStep) {
    for (int e = tid; e < kStep * kTile; e += 256) {  // 4 elements of each operand per thread
      const int k = e / kTile, m = e % kTile, j = j0 + k;
      const int tap = j / g.Cg, c = j % g.Cg, r = tap / g.S, s = tap % g.S;
      const int pixel = row0 + m;
      A value = A(0);
      if (pixel < rows && j < depth) {
        const int n = pixel / (g.P * g.Q), pq = pixel % (g.P * g.Q);
        const int ih = pq / g.Q * g.stride_h - g.pad_top + r * g.dilation_h;
        const int iw = pq % g.Q * g.stride_w - g.pad_left + s * g.dilation_w;
        if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
          value = to_acc(x[((static_cast<int64_t>(n) * g.H + ih) * g.W + iw) * g.C + group * g.Cg + c]);
      }
      shared->a[k][m] = value;
      const int out_channel = col0 + m;
      shared->b[k][m] = out_channel < g.Kg && j < depth
          ? to_acc(w[static_cast<int64_t>(group * g.Kg + out_channel) * depth + j]) : A(0);  // KRSC: (tap, c) = j
    }
    __syncthreads();
    tile_fma(shared->a, shared->b, acc);
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int pixel = row0 + threadIdx.y * 4 + i, channel = col0 + threadIdx.x * 4 + j;
      if (pixel < rows && channel < g.Kg) store_output<T>(p, pixel, group * g.Kg + channel, acc[i][j]);
    }
}

template <typename T>
__global__ void __launch_bounds__(256) dgrad_simt_kernel(BackwardParams p) {
  auto* shared = simt_shared<acc_t<T>>();
  using A = acc_t<T>;
  const Geometry& g = p.g;
  const T* gz = static_cast<const T*>(p.grad_z);
  const T* w = static_cast<const T*>(p.weight);
  const int group = blockIdx.z, tid = threadIdx.y * kThreadsX + threadIdx.x;
  const int row0 = blockIdx.x * kTile, col0 = blockIdx.y * kTile, rows = g.N * g.H * g.W;
  A acc[4][4] = {};
  for (int tap = 0; tap < g.R * g.S; ++tap) {
    const int r = tap / g.S, s = tap % g.S;
    for (int k0 = 0; k0 < g.Kg; k0 += kStep) {
      for (int e = tid; e < kStep * kTile; e += 256) {
        const int kk = e / kTile, m = e % kTile, k = k0 + kk;
        const int pixel = row0 + m;
        A value = A(0);
        if (pixel < rows && k < g.Kg) {
          const int n = pixel / (g.H * g.W), hw = pixel % (g.H * g.W);
          const int th = hw / g.W + g.pad_top - r * g.dilation_h, tw = hw % g.W + g.pad_left - s * g.dilation_w;
          if (th >= 0 && tw >= 0 && th % g.stride_h == 0 && tw % g.stride_w == 0) {
            const int oh = th / g.stride_h, ow = tw / g.stride_w;
            if (oh < g.P && ow < g.Q)
              value = to_acc(gz[((static_cast<int64_t>(n) * g.P + oh) * g.Q + ow) * g.K + group * g.Kg + k]);
          }
        }
        shared->a[kk][m] = value;
        const int c = col0 + m;
        shared->b[kk][m] = c < g.Cg && k < g.Kg
            ? to_acc(w[(static_cast<int64_t>(group * g.Kg + k) * g.R * g.S + tap) * g.Cg + c]) : A(0);
      }
      __syncthreads();
      tile_fma(shared->a, shared->b, acc);
      __syncthreads();
    }
  }
  T* out = static_cast<T*>(p.grad_input);
  const Strides& st = p.grad_input_strides;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int pixel = row0 + threadIdx.y * 4 + i, c = col0 + threadIdx.x * 4 + j;
      if (pixel >= rows || c >= g.Cg) continue;
      const int n = pixel / (g.H * g.W), hw = pixel % (g.H * g.W);
      out[n * st.n + (group * g.Cg + c) * st.c + hw / g.W * st.h + hw % g.W * st.w] = from_acc<T>(acc[i][j]);
    }
}

template <typename T>
__global__ void __launch_bounds__(256) wgrad_simt_kernel(BackwardParams p) {
  auto* shared = simt_shared<acc_t<T>>();
  using A = acc_t<T>;
  const Geometry& g = p.g;
  const T* gz = static_cast<const T*>(p.grad_z);
  const T* x = static_cast<const T*>(p.x);
  const int split = blockIdx.z % p.splits, tap = blockIdx.z / p.splits % (g.R * g.S);
  const int group = blockIdx.z / p.splits / (g.R * g.S);
  const int r = tap / g.S, s = tap % g.S, tid = threadIdx.y * kThreadsX + threadIdx.x;
  const int row0 = blockIdx.x * kTile, col0 = blockIdx.y * kTile;  // output channels, input channels
  const int pixels = g.N * g.P * g.Q, per_split = (pixels + p.splits - 1) / p.splits;
  const int begin = split * per_split, end = pixels < begin + per_split ? pixels : begin + per_split;
  A acc[4][4] = {};
  for (int m0 = begin; m0 < end; m0 += kStep) {
    for (int e = tid; e < kStep * kTile; e += 256) {
      const int kk = e / kTile, col = e % kTile, pixel = m0 + kk;
      const bool live = pixel < end;
      const int out_channel = row0 + col;
      shared->a[kk][col] = live && out_channel < g.Kg
          ? to_acc(gz[static_cast<int64_t>(pixel) * g.K + group * g.Kg + out_channel]) : A(0);
      A value = A(0);
      const int c = col0 + col;
      if (live && c < g.Cg) {
        const int n = pixel / (g.P * g.Q), pq = pixel % (g.P * g.Q);
        const int ih = pq / g.Q * g.stride_h - g.pad_top + r * g.dilation_h;
        const int iw = pq % g.Q * g.stride_w - g.pad_left + s * g.dilation_w;
        if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
          value = to_acc(x[((static_cast<int64_t>(n) * g.H + ih) * g.W + iw) * g.C + group * g.Cg + c]);
      }
      shared->b[kk][col] = value;
    }
    __syncthreads();
    tile_fma(shared->a, shared->b, acc);
    __syncthreads();
  }
  A* partial = static_cast<A*>(p.weight_partial);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int k = row0 + threadIdx.y * 4 + i, c = col0 + threadIdx.x * 4 + j;
      if (k < g.Kg && c < g.Cg)
        partial[((static_cast<int64_t>(split) * g.K + group * g.Kg + k) * g.R * g.S + tap) * g.Cg + c] = acc[i][j];
    }
}

// Depthwise (groups == C == K): a thread per output element, channels fastest, so neighbouring
// threads read neighbouring channels of channels-last x (coalesced); the stencil of R x S taps in
// registers. Memory-bound: a GEMM tile would multiply one channel at a time.
template <typename T>
__global__ void __launch_bounds__(256) depthwise_forward_kernel(ForwardParams p) {
  using A = acc_t<T>;
  const Geometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  const int64_t total = static_cast<int64_t>(g.N) * g.P * g.Q * g.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % g.C);
    const int pixel = static_cast<int>(i / g.C);
    const int n = pixel / (g.P * g.Q), pq = pixel % (g.P * g.Q);
    const int h0 = pq / g.Q * g.stride_h - g.pad_top, w0 = pq % g.Q * g.stride_w - g.pad_left;
    A acc = A(0);
    for (int r = 0; r < g.R; ++r) {
      const int ih = h0 + r * g.dilation_h;
      if (ih < 0 || ih >= g.H) continue;
      for (int s = 0; s < g.S; ++s) {
        const int iw = w0 + s * g.dilation_w;
        if (iw < 0 || iw >= g.W) continue;
        acc += to_acc(x[((static_cast<int64_t>(n) * g.H + ih) * g.W + iw) * g.C + c]) * to_acc(w[(c * g.R + r) * g.S + s]);
      }
    }
    store_output<T>(p, pixel, c, acc);
  }
}

// grad_weight[k][c][r][s] (the op's KCRS layout) = sum over splits of partial[split][k][r][s][c].
template <typename T>
__global__ void wgrad_reduce_kernel(BackwardParams p, T* grad_weight) {
  using A = acc_t<T>;
  const Geometry& g = p.g;
  const int64_t total = static_cast<int64_t>(g.K) * g.Cg * g.R * g.S;
  const A* partial = static_cast<const A*>(p.weight_partial);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / (g.Cg * g.R * g.S), rest = i % (g.Cg * g.R * g.S);
    const int64_t c = rest / (g.R * g.S), tap = rest % (g.R * g.S);
    A sum = A(0);
    for (int split = 0; split < p.splits; ++split) sum += partial[((split * g.K + k) * g.R * g.S + tap) * g.Cg + c];
    grad_weight[i] = from_acc<T>(sum);
  }
}

template <typename T>
__global__ void preactivation_grad_kernel(const T* grad_output, const T* activation_input, T* grad_z, int64_t count,
                                          int activation) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    grad_z[i] = from_acc<T>(to_acc(grad_output[i]) * activation_slope(to_acc(activation_input[i]), activation));
}

// grad_bias[k] = sum over pixels of grad_z[pixel][k]: a block per 32 channels, 8 rows of threads
// striding over the pixels, then a sum over the rows in shared memory.
template <typename T>
__global__ void __launch_bounds__(256) bias_grad_kernel(const T* grad_z, T* grad_bias, int64_t pixels, int K) {
  using A = acc_t<T>;
  A* shared = reinterpret_cast<A*>(conv_shared);
  const int k = blockIdx.x * 32 + threadIdx.x;
  A sum = A(0);
  if (k < K)
    for (int64_t m = threadIdx.y; m < pixels; m += blockDim.y) sum += to_acc(grad_z[m * K + k]);
  shared[threadIdx.y * 32 + threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && k < K) {
    A total = A(0);
    for (unsigned y = 0; y < blockDim.y; ++y) total += shared[y * 32 + threadIdx.x];
    grad_bias[k] = from_acc<T>(total);
  }
}

}  // namespace bigkern::cuda::conv
