// Device code shared by the CUDA recurrent kernels: the gate math, and the tile of work a thread
// block does in one step (used by both the persistent kernel and the per-step kernel).
//
// Work mapping of a step: a block owns `units` consecutive hidden units, all G gates of them.
// Each warp takes (batch row, unit) pairs in turn; its 32 lanes split the K dimension of the dot
// products h_prev[row, :] . w[g * H + unit, :] (one per gate, so a row of h_prev is read once for
// all G gates), then reduce across the warp; lane 0 runs the gate math and stores. Weights are read
// through a pointer and a row stride, so the same code multiplies by a slice resident in shared
// memory (persistent kernel) or by the weights in global memory (per-step kernel).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/attention/sm80_primitives.cuh"  // mma_m16n8k16, pack_pair (the emulator has its own)
#include "cuda/rnn/rnn_params.h"

// Full unrolling keeps the per-gate accumulators in registers. Only the device pass knows the
// pragma (the SIMT emulator compiles these headers as host C++).
#if defined(__CUDA_ARCH__)
#define BIGKERN_RNN_UNROLL _Pragma("unroll")
#else
#define BIGKERN_RNN_UNROLL
#endif

namespace bigkern::cuda::rnn {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

__device__ __forceinline__ float warp_sum(float v) {
BIGKERN_RNN_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

constexpr int gate_count(int mode) { return mode == 0 ? 4 : mode == 1 ? 3 : 1; }

// The weights a block multiplies by: row (g, u) of its slice at w + (g * units + u) * ld when
// `sliced`, else the full matrix's row g * H + unit0 + u.
template <typename T>
struct GateRows {
  const T* w;
  int64_t ld;
  bool sliced;
  int64_t units, hidden, unit0;
  __device__ __forceinline__ const T* row(int g, int64_t u) const {
    return sliced ? w + (g * units + u) * ld : w + (g * hidden + unit0 + u) * ld;
  }
};

// The gate math of one (row b, unit j) from its gate sums (acc: the recurrent product, plus the
// input product for cells; x_n: the GRU's separate input part of n), adding the step's input
// part and the biases; stores the new state, the workspace and the output row.
template <typename T, int MODE>
__device__ __forceinline__ void finish_unit(const StepParams& p, float (&acc)[4], float x_n, const float* h_prev,
                                            float* h_next, int64_t row_offset, int64_t b, int64_t j) {
  constexpr int G = gate_count(MODE);
  const int64_t H = p.hidden, P = p.out_size;
  const T* x_proj = static_cast<const T*>(p.x_proj);
  const T* b_hh = static_cast<const T*>(p.b_hh);
  const T* b_ih = static_cast<const T*>(p.b_ih);
  const float* h_row = h_prev + b * P;
  const int64_t row = row_offset + b;
BIGKERN_RNN_UNROLL
  for (int g = 0; g < G; ++g) {
    if (b_hh != nullptr) acc[g] += to_float(b_hh[g * H + j]);
    float x_part = 0.f;
    if (x_proj != nullptr) x_part = to_float(x_proj[row * G * H + g * H + j]);
    if (b_ih != nullptr) x_part += to_float(b_ih[g * H + j]);
    if (MODE == 1 && g == 2) {
      x_n += x_part;
    } else {
      acc[g] += x_part;
    }
  }
  float* ws = p.workspace != nullptr ? p.workspace + row * p.ws_width + j : nullptr;
  float h;
  if (MODE == 0) {
    const float i = sigmoid(acc[0]), f = sigmoid(acc[1]), g = tanhf(acc[2]), o = sigmoid(acc[3]);
    float* c = p.c_state + b * H + j;
    const float c1 = f * *c + i * g;
    *c = c1;
    h = o * tanhf(c1);
    if (ws != nullptr) {
      ws[0] = i;
      ws[H] = f;
      ws[2 * H] = g;
      ws[3 * H] = o;
      ws[4 * H] = c1;
      if (p.h_raw != nullptr) ws[5 * H] = h;
    }
  } else if (MODE == 1) {
    const float r = sigmoid(acc[0]), z = sigmoid(acc[1]), n = tanhf(x_n + r * acc[2]);
    h = (1.f - z) * n + z * h_row[j];
    if (ws != nullptr) {
      ws[0] = r;
      ws[H] = z;
      ws[2 * H] = n;
      ws[3 * H] = acc[2];
    }
  } else {
    h = MODE == 2 ? tanhf(acc[0]) : fmaxf(acc[0], 0.f);
    if (ws != nullptr) ws[0] = h;
  }
  if (p.h_raw != nullptr) {
    p.h_raw[b * H + j] = h;
  } else {
    h_next[b * P + j] = h;
    static_cast<T*>(p.output)[row * P + j] = from_float<T>(h);
  }
}

// One step of `rows` batch rows for units [unit0, unit0 + units) of a block. h_prev / h_next
// float32 (B, P); x_proj rows start at row_offset. Cells pass `x` / `w_ih` (a second product
// into the same sums; the GRU's n gate keeps its input part apart).
template <typename T, int MODE>
__device__ void step_tile(const StepParams& p, const GateRows<T>& w_hh, const GateRows<T>& w_ih, const T* x,
                          const float* h_prev, float* h_next, int64_t row_offset, int64_t rows, int64_t unit0,
                          int64_t units) {
  constexpr int G = gate_count(MODE);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t P = p.out_size, I = p.input_size;
  for (int64_t pair = warp; pair < rows * units; pair += warps) {
    const int64_t b = pair / units, u = pair % units, j = unit0 + u;
    float acc[4] = {0.f, 0.f, 0.f, 0.f}, x_n = 0.f;
    const float* h_row = h_prev + b * P;
    for (int64_t k = lane; k < P; k += 32) {
      const float h = h_row[k];
BIGKERN_RNN_UNROLL
      for (int g = 0; g < G; ++g) acc[g] += h * to_float(w_hh.row(g, u)[k]);
    }
    if (x != nullptr) {
      const T* x_row = x + b * I;
      for (int64_t k = lane; k < I; k += 32) {
        const float xv = to_float(x_row[k]);
BIGKERN_RNN_UNROLL
        for (int g = 0; g < G; ++g) {
          const float prod = xv * to_float(w_ih.row(g, u)[k]);
          if (MODE == 1 && g == 2) {
            x_n += prod;
          } else {
            acc[g] += prod;
          }
        }
      }
    }
BIGKERN_RNN_UNROLL
    for (int g = 0; g < G; ++g) acc[g] = warp_sum(acc[g]);
    if (x != nullptr && MODE == 1) x_n = warp_sum(x_n);
    if (lane == 0) finish_unit<T, MODE>(p, acc, x_n, h_prev, h_next, row_offset, b, j);
  }
}

// ---- The tensor-core recurrent product (float16 / bfloat16 layers) ------------------------------

template <typename T>
struct MmaElement;
template <>
struct MmaElement<__half> {
  static constexpr cuda_attention::ElementType kType = cuda_attention::ElementType::kFloat16;
};
template <>
struct MmaElement<__nv_bfloat16> {
  static constexpr cuda_attention::ElementType kType = cuda_attention::ElementType::kBFloat16;
};

// Batch rows a block's gate sums are staged for at a time, and the float32 shared memory that takes.
constexpr int64_t kMmaRows = 64;
__host__ __device__ constexpr int64_t padded_units(int64_t units) { return (units + 7) / 8 * 8; }
__host__ __device__ constexpr int64_t mma_sums_bytes(int mode, int64_t units) {
  return kMmaRows * gate_count(mode) * padded_units(units) * 4;
}

// step_tile's product on tensor cores: the block's gate sums S (rows x G * Upad, gate-major
// columns, Upad = units rounded up to 8) = h_prev (rows x P) @ W^T, one mma.m16n8k16 tile
// (16 rows x 8 units of one gate) per warp at a time, staged in shared memory `sums` in chunks of
// kMmaRows rows; then one thread per (row, unit) runs finish_unit.
//
// Fragments of mma.m16n8k16.row.col (PTX ISA, "Matrix Fragments for mma.m16n8k16"), with
// group = lane / 4 and t = lane % 4:
//   A (16 x 16, row-major): reg 0 = (row group, cols 2t, 2t+1), reg 1 = (row group + 8, same cols),
//                           reg 2 = (row group, cols 2t+8, 2t+9), reg 3 = (row group + 8, cols 2t+8, 2t+9)
//   B (16 x 8, "col": k fastest per column n): reg 0 = (rows k = 2t, 2t+1; col group),
//                           reg 1 = (rows k = 2t+8, 2t+9; col group)
//   C (16 x 8, float32):    c0, c1 = (row group, cols 2t, 2t+1); c2, c3 = (row group + 8, same cols)
// Column n of B is weight row (gate, unit u0 + n), whose k elements are contiguous in w_hh's
// rows: the "col" layout as it lies in memory. The lower-indexed element of each pair goes in the
// low 16 bits (pack_pair).
template <typename T, int MODE>
__device__ void step_tile_mma(const StepParams& p, const GateRows<T>& w_hh, const float* h_prev, float* h_next,
                              int64_t row_offset, int64_t rows, int64_t unit0, int64_t units, float* sums) {
  constexpr auto kType = MmaElement<T>::kType;
  constexpr int G = gate_count(MODE);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int group = lane >> 2, t = lane & 3;
  const int64_t P = p.out_size, upad = padded_units(units), ld_sums = G * upad, unit_tiles = upad / 8;
  const int64_t n_tiles = G * unit_tiles;
  for (int64_t r0 = 0; r0 < rows; r0 += kMmaRows) {
    const int64_t chunk = rows - r0 < kMmaRows ? rows - r0 : kMmaRows, m_tiles = (chunk + 15) / 16;
    for (int64_t tile = warp; tile < m_tiles * n_tiles; tile += warps) {
      const int64_t mt = tile / n_tiles, nt = tile % n_tiles;
      const int gate = static_cast<int>(nt / unit_tiles);
      const int64_t u0 = (nt % unit_tiles) * 8, u = u0 + group;
      const int64_t row_a = r0 + mt * 16 + group, row_b = row_a + 8;
      const T* w_row = u < units ? w_hh.row(gate, u) : nullptr;
      auto h_at = [&](int64_t r, int64_t k) { return r < rows && k < P ? h_prev[r * P + k] : 0.f; };
      auto w_at = [&](int64_t k) { return w_row != nullptr && k < P ? to_float(w_row[k]) : 0.f; };
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int64_t k0 = 0; k0 < P; k0 += 16) {
        const int64_t k = k0 + 2 * t;
        const uint32_t a[4] = {
            cuda_attention::pack_pair<kType>(h_at(row_a, k), h_at(row_a, k + 1)),
            cuda_attention::pack_pair<kType>(h_at(row_b, k), h_at(row_b, k + 1)),
            cuda_attention::pack_pair<kType>(h_at(row_a, k + 8), h_at(row_a, k + 9)),
            cuda_attention::pack_pair<kType>(h_at(row_b, k + 8), h_at(row_b, k + 9)),
        };
        const uint32_t b0 = cuda_attention::pack_pair<kType>(w_at(k), w_at(k + 1));
        const uint32_t b1 = cuda_attention::pack_pair<kType>(w_at(k + 8), w_at(k + 9));
        cuda_attention::mma_m16n8k16<kType>(acc, a, b0, b1);
      }
      const int64_t col = gate * upad + u0 + 2 * t, local = mt * 16 + group;
      sums[local * ld_sums + col] = acc[0];
      sums[local * ld_sums + col + 1] = acc[1];
      sums[(local + 8) * ld_sums + col] = acc[2];
      sums[(local + 8) * ld_sums + col + 1] = acc[3];
    }
    __syncthreads();
    for (int64_t pair = threadIdx.x; pair < chunk * units; pair += blockDim.x) {
      const int64_t local = pair / units, u = pair % units;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
BIGKERN_RNN_UNROLL
      for (int g = 0; g < G; ++g) acc[g] = sums[local * ld_sums + g * upad + u];
      finish_unit<T, MODE>(p, acc, 0.f, h_prev, h_next, row_offset, r0 + local, unit0 + u);
    }
    __syncthreads();
  }
}


}  // namespace bigkern::cuda::rnn
