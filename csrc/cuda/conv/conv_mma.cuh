// The tensor-core forward for float16 / bfloat16 (sm_80+): an implicit GEMM on mma.m16n8k16 with
// float32 accumulation, fed by a 3-stage cp.async pipeline; the epilogue is the SIMT kernels'
// (store_output: bias, residual, activation, pre-activation, any output strides).
//
// Block: 4 warps (2 x 2) own 128 output pixels x 64 output channels of one group, each warp 64 x 32
// (4 x 4 mma tiles: 64 accumulators per thread). Reduction steps are (tap, 32 channels): per step
// the block copies a 128 x 32 tile of x (one 16-byte chunk = 8 channels of one pixel per copy, zero
// filled outside the input, so padding costs no branch in the product) and a 64 x 32 tile of the
// KRSC weights into shared memory rows of 40 elements (80 bytes: the 8 rows an ldmatrix reads fall
// in distinct banks). Needs C/G % 8 == 0 so every chunk is whole and 16-byte aligned; the host
// routes other shapes to the SIMT kernel. 1x1 convolutions are the plain GEMM case of the same
// kernel (one tap). Headers only: tests/cuda_host runs it under the SIMT emulator.
#pragma once
#include "cuda/attention/sm80_primitives.cuh"  // cp_async_16, ldmatrix_x4, mma_m16n8k16 (the emulator has its own)
#include "cuda/conv/conv_simt.cuh"

namespace bigkern::cuda::conv {

namespace sm80 = bigkern::cuda_attention;

constexpr int kMmaRows = 128, kMmaCols = 64, kMmaDepth = 32, kMmaStages = 3, kMmaThreads = 128;
constexpr int kMmaPitch = kMmaDepth + 8;  // elements per shared-memory row

constexpr size_t mma_shared_bytes() { return static_cast<size_t>(kMmaStages) * (kMmaRows + kMmaCols) * kMmaPitch * 2; }

template <typename T>
constexpr sm80::ElementType mma_type() {
  return std::is_same_v<T, __half> ? sm80::ElementType::kFloat16 : sm80::ElementType::kBFloat16;
}

template <typename T>
__global__ void __launch_bounds__(kMmaThreads) forward_mma_kernel(ForwardParams p) {
  const Geometry& g = p.g;
  T* a_tiles = reinterpret_cast<T*>(conv_shared);               // [stage][kMmaRows][kMmaPitch]
  T* b_tiles = a_tiles + kMmaStages * kMmaRows * kMmaPitch;     // [stage][kMmaCols][kMmaPitch]
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.weight);
  const int group = blockIdx.z, row0 = blockIdx.x * kMmaRows, col0 = blockIdx.y * kMmaCols;
  const int rows = g.N * g.P * g.Q, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int warp_row = (warp / 2) * 64, warp_col = (warp % 2) * 32;
  const int chunks = (g.Cg + kMmaDepth - 1) / kMmaDepth, steps = g.R * g.S * chunks;

  // This thread's 4 copies of x per step: rows tid / 4 + 32 i, chunk tid % 4 (fixed pixels).
  int a_n[4], a_h[4], a_w[4];
  bool a_live[4];
  BIGKERN_CONV_UNROLL
  for (int i = 0; i < 4; ++i) {
    const int pixel = row0 + tid / 4 + 32 * i;
    a_live[i] = pixel < rows;
    const int n = pixel / (g.P * g.Q), pq = pixel % (g.P * g.Q);
    a_n[i] = n, a_h[i] = pq / g.Q * g.stride_h - g.pad_top, a_w[i] = pq % g.Q * g.stride_w - g.pad_left;
  }
  const int part = tid % 4;

  auto load_step = [&](int step, int stage) {
    const int tap = step / chunks, c = (step % chunks) * kMmaDepth + part * 8;
    const int r = tap / g.S, s = tap % g.S;
    BIGKERN_CONV_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int ih = a_h[i] + r * g.dilation_h, iw = a_w[i] + s * g.dilation_w;
      const bool ok = a_live[i] && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W && c < g.Cg;
      const T* src = ok ? x + ((static_cast<int64_t>(a_n[i]) * g.H + ih) * g.W + iw) * g.C + group * g.Cg + c : x;
      sm80::cp_async_16(a_tiles + (stage * kMmaRows + tid / 4 + 32 * i) * kMmaPitch + part * 8, src, ok);
    }
    BIGKERN_CONV_UNROLL
    for (int i = 0; i < 2; ++i) {
      const int k = col0 + tid / 4 + 32 * i;
      const bool ok = k < g.Kg && c < g.Cg;
      const T* src = ok ? w + (static_cast<int64_t>(group * g.Kg + k) * g.R * g.S + tap) * g.Cg + c : w;
      sm80::cp_async_16(b_tiles + (stage * kMmaCols + tid / 4 + 32 * i) * kMmaPitch + part * 8, src, ok);
    }
  };

  float acc[4][4][4] = {};
  BIGKERN_CONV_UNROLL
  for (int stage = 0; stage < kMmaStages - 1; ++stage) {
    if (stage < steps) load_step(stage, stage);
    sm80::cp_async_commit();
  }
  for (int step = 0; step < steps; ++step) {
    sm80::cp_async_wait<kMmaStages - 2>();
    __syncthreads();  // this step's tiles are in; every warp is done with the stage reloaded next
    const int next = step + kMmaStages - 1;
    if (next < steps) load_step(next, next % kMmaStages);
    sm80::cp_async_commit();
    const T* a_stage = a_tiles + (step % kMmaStages) * kMmaRows * kMmaPitch;
    const T* b_stage = b_tiles + (step % kMmaStages) * kMmaCols * kMmaPitch;
    BIGKERN_CONV_UNROLL
    for (int kk = 0; kk < kMmaDepth; kk += 16) {
      uint32_t a[4][4], b[4][2];
      BIGKERN_CONV_UNROLL
      for (int mt = 0; mt < 4; ++mt)  // matrices: rows 0-7 / 8-15 x cols 0-7 / 8-15 -> a0..a3
        sm80::ldmatrix_x4(a[mt], a_stage + (warp_row + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kMmaPitch +
                                     kk + (lane >> 4) * 8);
      BIGKERN_CONV_UNROLL
      for (int np = 0; np < 2; ++np) {  // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ...) -> b of 2 tiles
        uint32_t r[4];
        sm80::ldmatrix_x4(r, b_stage + (warp_col + np * 16 + (lane & 7) + (lane >> 4) * 8) * kMmaPitch + kk +
                                 ((lane >> 3) & 1) * 8);
        b[2 * np][0] = r[0], b[2 * np][1] = r[1], b[2 * np + 1][0] = r[2], b[2 * np + 1][1] = r[3];
      }
      BIGKERN_CONV_UNROLL
      for (int mt = 0; mt < 4; ++mt)
        BIGKERN_CONV_UNROLL
        for (int nt = 0; nt < 4; ++nt) sm80::mma_m16n8k16<mma_type<T>()>(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
  }
  sm80::cp_async_wait<0>();
  BIGKERN_CONV_UNROLL
  for (int mt = 0; mt < 4; ++mt)
    BIGKERN_CONV_UNROLL
    for (int nt = 0; nt < 4; ++nt)
      BIGKERN_CONV_UNROLL
      for (int i = 0; i < 4; ++i) {  // accumulator i: row group (+8 for i >= 2), col 2 quad + (i & 1)
        const int pixel = row0 + warp_row + mt * 16 + (lane >> 2) + (i >= 2 ? 8 : 0);
        const int channel = col0 + warp_col + nt * 8 + 2 * (lane & 3) + (i & 1);
        if (pixel < rows && channel < g.Kg) store_output<T>(p, pixel, group * g.Kg + channel, acc[mt][nt][i]);
      }
}

}  // namespace bigkern::cuda::conv
