// dQ of the attention backward without atomics: the deterministic path (deterministic=true).
//
// The main backward kernel (backward_kernel.cuh) owns key tiles, so the dQ of a query row gets
// one contribution per key tile; adding them with atomics makes the float32 sum depend on the
// order the CTAs happen to run in. Here one CTA owns 64 query rows of one (batch, head), four
// warps of 16 rows, and loops over the key tiles in order, so every element of dQ is summed by
// one thread in a fixed order: bitwise the same on every run. It recomputes S, dP and dS like the
// main kernel (backward_tiles.cuh) and keeps dQ in registers:
//   S = Q K^T, dP = dO V^T   (A: Q, dO rows; B: K, V rows = n)
//   dS from the softmax gradient, in registers; the accumulator layout of two n8 tiles is the
//   A layout of one k16 step (fragment_layout.h), so dS feeds dQ += dS K directly
//   (B: K rows = k, read with .trans).
// K/V tiles stream through `stages` shared-memory buffers (backward_config.h); key tiles beyond
// the causal diagonal of the CTA's last row are never visited. Epilogue: dQ * scale, rounded,
// staged in the Q tile, 16-byte stores into grad_q.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention_masking.cuh"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_config.h"
#include "cuda/attention/backward_params.h"
#include "cuda/attention/backward_tiles.cuh"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

template <ElementType kType, int kHeadDim>
__global__ void __launch_bounds__(kBackwardDqThreads)
    attention_backward_dq_kernel(const AttentionParams p, const BackwardBuffers g) {
  using T = element_t<kType>;
  constexpr BackwardDqTile kTile = backward_dq_tile(kHeadDim);
  constexpr int kBlockM = kBackwardDqBlockM;
  constexpr int kBlockN = kTile.block_n;
  constexpr int kStages = kTile.stages;
  constexpr int kPitch = backward_row_elements(kHeadDim);
  constexpr int kScoreTiles = kBlockN / 8;
  constexpr int kOutputTiles = kHeadDim / 8;
  static_assert(kStages == 1 || kStages == 2, "one or two K/V buffers");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "tile shapes");
  static_assert(backward_dq_shared_bytes(kHeadDim) <= kBackwardMaxSharedBytes, "shared memory");

  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* const q_tile = reinterpret_cast<T*>(shared_bytes);
  T* const do_tile = q_tile + kBlockM * kPitch;
  T* const k_slots = do_tile + kBlockM * kPitch;
  T* const v_slots = k_slots + kStages * kBlockN * kPitch;

  // CTA order: query tiles fastest, then heads, batch (CTAs reading the same K/V run together).
  const int32_t q_tiles = (p.len_q + kBlockM - 1) / kBlockM;
  int64_t linear = blockIdx.x;
  const int32_t q_tile_index = static_cast<int32_t>(linear % q_tiles);
  linear /= q_tiles;
  const int32_t h = static_cast<int32_t>(linear % p.heads_q);
  const int32_t b = static_cast<int32_t>(linear / p.heads_q);
  const int32_t kv_head = h / p.kv_group;
  const int32_t row0 = q_tile_index * kBlockM;
  const int64_t problem = static_cast<int64_t>(b) * p.heads_q + h;

  const KeyVisibility visibility = KeyVisibility::of(p);
  const int32_t last_row = (row0 + kBlockM < p.len_q ? row0 + kBlockM : p.len_q) - 1;
  const int32_t key_tiles = (visibility.key_end(last_row) + kBlockN - 1) / kBlockN;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane >> 2;
  const int quad = lane & 3;
  const int local_row = warp * 16 + group;  // this lane's rows: local_row and local_row + 8

  RowStats stats;
  BIGKERN_UNROLL
  for (int half = 0; half < 2; ++half) {
    const int32_t row = row0 + local_row + 8 * half;
    stats.lse_log2[half] = row < p.len_q ? p.lse[problem * p.len_q + row] * kLog2e : INFINITY;
    stats.delta[half] = row < p.len_q ? g.delta[problem * p.len_q + row] : 0.f;
  }
  const AttentionMask<kType> mask = AttentionMask<kType>::of(p, b, h);
  const DropoutGenerator dropout = DropoutGenerator::of(p, b, h);

  float acc_dq[kOutputTiles][4];
  zero_accumulators(acc_dq);

  if (key_tiles > 0) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head;
    const T* d_out = static_cast<const T*>(g.grad_out) + b * g.grad_out_strides.batch + h * g.grad_out_strides.head;
    const T* k = static_cast<const T*>(p.k) + b * p.k_strides.batch + kv_head * p.k_strides.head;
    const T* v = static_cast<const T*>(p.v) + b * p.v_strides.batch + kv_head * p.v_strides.head;
    auto load_key_tile = [&](int32_t tile, int slot) {
      load_rows_async<kBlockN, kHeadDim, kBackwardDqThreads>(k_slots + slot * kBlockN * kPitch, k, p.k_strides.row,
                                                             tile * kBlockN, p.len_k, p.head_dim);
      load_rows_async<kBlockN, kHeadDim, kBackwardDqThreads>(v_slots + slot * kBlockN * kPitch, v, p.v_strides.row,
                                                             tile * kBlockN, p.len_k, p.head_dim);
    };
    load_rows_async<kBlockM, kHeadDim, kBackwardDqThreads>(q_tile, q, p.q_strides.row, row0, p.len_q, p.head_dim);
    load_rows_async<kBlockM, kHeadDim, kBackwardDqThreads>(do_tile, d_out, g.grad_out_strides.row, row0, p.len_q,
                                                           p.head_dim);
    load_key_tile(0, 0);
    cp_async_commit();

    for (int32_t tile = 0; tile < key_tiles; ++tile) {
      const int slot = kStages == 2 ? tile & 1 : 0;
      // Tile `tile` has landed for this thread; the barrier publishes every thread's copies and
      // guarantees every warp finished the previous tile, whose buffer the next copy reuses.
      cp_async_wait<0>();
      __syncthreads();
      if constexpr (kStages == 2) {
        if (tile + 1 < key_tiles) load_key_tile(tile + 1, slot ^ 1);
        cp_async_commit();
      }

      const T* const k_tile = k_slots + slot * kBlockN * kPitch;
      const T* const v_tile = v_slots + slot * kBlockN * kPitch;
      const int32_t col0 = tile * kBlockN;

      const uint32_t keep_bits = dropout_keep_bits<kScoreTiles>(p, dropout, row0 + local_row, col0 + 2 * quad);
      float s[kScoreTiles][4];
      float dp[kScoreTiles][4];
      scores_and_probability_grads<kType, kHeadDim, kScoreTiles>(s, dp, q_tile + warp * 16 * kPitch,
                                                                 do_tile + warp * 16 * kPitch, k_tile, v_tile, lane);
      const bool per_element = mask.present() || !visibility.all_visible(row0, col0 + kBlockN);
      softmax_backward<kType, kScoreTiles>(s, dp, row0 + local_row, col0 + 2 * quad, stats, keep_bits, per_element, p,
                                           visibility, mask);

      // dQ += dS K, dS from registers: A element i of k16 step kk is accumulator element
      // accumulator_to_a_source(i) of n8 tile 2 * kk + source.tile.
      BIGKERN_UNROLL
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t a[4];
        BIGKERN_UNROLL
        for (int r = 0; r < 4; ++r) {
          const AccumulatorSource low = accumulator_to_a_source(2 * r);
          const AccumulatorSource high = accumulator_to_a_source(2 * r + 1);
          a[r] = pack_pair<kType>(dp[2 * kk + low.tile][low.c], dp[2 * kk + high.tile][high.c]);
        }
        mma_b_rows_k<kType, kOutputTiles>(acc_dq, a, k_tile + kk * 16 * kPitch, kPitch, lane);
      }

      if constexpr (kStages == 1) {
        __syncthreads();  // every warp is done with the single K/V buffer
        if (tile + 1 < key_tiles) load_key_tile(tile + 1, 0);
        cp_async_commit();
      }
    }
  }

  // ---- Epilogue: dQ * scale staged in this warp's rows of the Q tile, then 16-byte stores ----
  cp_async_wait<0>();
  __syncthreads();
  BIGKERN_UNROLL
  for (int n = 0; n < kOutputTiles; ++n) {
    BIGKERN_UNROLL
    for (int half = 0; half < 2; ++half) {
      *reinterpret_cast<uint32_t*>(q_tile + (local_row + 8 * half) * kPitch + n * 8 + 2 * quad) =
          pack_pair<kType>(acc_dq[n][2 * half] * p.scale, acc_dq[n][2 * half + 1] * p.scale);
    }
  }
  __syncthreads();
  const int32_t rows = p.len_q - row0 < kBlockM ? p.len_q - row0 : kBlockM;
  store_rows<kBlockM, kHeadDim, kBackwardDqThreads>(static_cast<T*>(g.grad_q) + (problem * p.len_q + row0) * p.head_dim,
                                                    q_tile, rows, p.head_dim);
}

}  // namespace bigkern::cuda_attention
