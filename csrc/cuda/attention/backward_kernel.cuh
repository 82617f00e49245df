// The CUDA attention backward, dK and dV (and dQ by atomics): the FlashAttention-2 backward
// (Dao, "FlashAttention-2", 2023, Algorithm 2) on sm_80+ tensor cores.
//
// One CTA owns block_n keys of one (batch, kv head) (tile shapes and their reasons:
// backward_config.h). It loads its K and V tiles once, then streams block_m query rows at a time,
// for every query head of the GQA group and every query tile that sees at least one of its keys
// (tiles wholly above the causal diagonal are skipped), and per step:
//   1. recomputes S = Q K^T and dP = dO V^T with mma.m16n8k16 (fp32 accumulators), the softmax
//      P = 2^(S * scale * log2 e + mask * log2 e - lse * log2 e) from the forward's lse, and
//      dS = P * (dP * Z / (1 - p) - Delta) (backward_tiles.cuh: softmax_backward); P after
//      dropout and dS go to shared memory in the input dtype;
//   2. dV += P^T dO and dK += dS^T Q: fp32 accumulators in registers that persist across the
//      whole loop, so the query heads of a GQA group are summed without atomics;
//   3. when dq_accum is given: dQ += dS K for the step's query rows, added to the float32
//      accumulator with atomicAdd (the default path; the deterministic path leaves dQ to
//      backward_dq_kernel.cuh and skips this product, a uniform branch).
// The Q/dO tile of the next step is copied with cp.async while this one is computed where shared
// memory allows two of them (stages = 2); with one buffer the copy starts once the step's last
// reader is done and overlaps only with the dQ product.
// Epilogue: dK * scale and dV are rounded to the input dtype, staged in the K/V tiles and stored
// with 16-byte writes. A CTA whose keys no query sees writes zeros.
//
// Padding: query rows beyond Lq and keys beyond Lk are zero-filled by cp.async; padding rows get
// lse = +inf (so P = 0) and Delta = 0, padding keys are masked by the per-element visibility test
// (the last key tile never passes all_visible), so neither contributes.
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
__global__ void __launch_bounds__(backward_threads(kHeadDim))
    attention_backward_kernel(const AttentionParams p, const BackwardBuffers g) {
  using T = element_t<kType>;
  constexpr BackwardTile kTile = backward_tile(kHeadDim);
  constexpr int kThreads = kTile.warps * 32;
  constexpr int kBlockN = kTile.block_n;
  constexpr int kBlockM = kTile.block_m;
  constexpr int kStages = kTile.stages;
  constexpr int kPitch = backward_row_elements(kHeadDim);
  constexpr int kScorePitch = backward_score_row_elements(kHeadDim);
  constexpr int kRowBands = kBlockM / 16;  // 16-row bands of steps 1 and 3
  constexpr int kKeyBands = kBlockN / 16;  // 16-key bands of step 2
  constexpr int kScoreTiles = kBlockN / backward_key_splits(kHeadDim) / 8;  // n8 tiles of S per warp
  constexpr int kDkvTiles = kHeadDim / backward_dkv_splits(kHeadDim) / 8;   // n8 tiles of dK, dV per warp
  constexpr int kDqTiles = kHeadDim / backward_dq_splits(kHeadDim) / 8;     // n8 tiles of dQ per warp
  constexpr BackwardSharedLayout kLayout = backward_shared_layout(kHeadDim);
  static_assert(kStages == 1 || kStages == 2, "one or two Q/dO buffers");
  static_assert(kHeadDim % 16 == 0 && kBlockM % 16 == 0 && kBlockN % 16 == 0, "tile shapes");
  static_assert(kTile.warps % kRowBands == 0 && kTile.warps % kKeyBands == 0, "warps cover whole bands");
  static_assert(kScoreTiles >= 1 && kDkvTiles >= 1 && kDqTiles >= 1, "every warp has columns");
  static_assert(kLayout.total <= kBackwardMaxSharedBytes, "shared memory");

  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* const k_tile = reinterpret_cast<T*>(shared_bytes + kLayout.k_tile);
  T* const v_tile = reinterpret_cast<T*>(shared_bytes + kLayout.v_tile);
  T* const q_slots = reinterpret_cast<T*>(shared_bytes + kLayout.q_slots);
  T* const do_slots = reinterpret_cast<T*>(shared_bytes + kLayout.do_slots);
  T* const p_tile = reinterpret_cast<T*>(shared_bytes + kLayout.p_tile);    // [query][key]
  T* const ds_tile = reinterpret_cast<T*>(shared_bytes + kLayout.ds_tile);  // [query][key]
  float* const lse_slots = reinterpret_cast<float*>(shared_bytes + kLayout.lse_slots);  // log2 units
  float* const delta_slots = reinterpret_cast<float*>(shared_bytes + kLayout.delta_slots);

  // CTA order: key tiles fastest, so the CTAs of one (batch, kv head), which stream the same Q/dO
  // tiles in the same order, run together and share them in L2.
  const int32_t key_tiles = (p.len_k + kBlockN - 1) / kBlockN;
  int64_t linear = blockIdx.x;
  const int32_t key_tile = static_cast<int32_t>(linear % key_tiles);
  linear /= key_tiles;
  const int32_t kv_head = static_cast<int32_t>(linear % p.heads_kv);
  const int32_t b = static_cast<int32_t>(linear / p.heads_kv);
  const int32_t col0 = key_tile * kBlockN;

  // Query tiles that see a key of this tile: from the one holding the first row that sees col0.
  const KeyVisibility visibility = KeyVisibility::of(p);
  const int32_t q_tiles = (p.len_q + kBlockM - 1) / kBlockM;
  const int64_t first_row = visibility.first_row(col0);
  const int32_t first_q_tile = first_row >= p.len_q ? q_tiles : static_cast<int32_t>(first_row / kBlockM);
  const int32_t head_begin = kv_head * p.kv_group;
  const int32_t head_end = head_begin + p.kv_group;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int group = lane >> 2;  // accumulator row within 8
  const int quad = lane & 3;    // accumulator column pair
  // Step 1 and 3: warp -> (16-row band, column split); step 2 and epilogue: (16-key band, split).
  const int row_band = warp % kRowBands;
  const int row_split = warp / kRowBands;
  const int key_band = warp % kKeyBands;
  const int key_split = warp / kKeyBands;

  float acc_dk[kDkvTiles][4];
  float acc_dv[kDkvTiles][4];
  zero_accumulators(acc_dk);
  zero_accumulators(acc_dv);

  auto load_step = [&](int32_t head, int32_t q_tile, int slot) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_strides.batch + head * p.q_strides.head;
    const T* d_out = static_cast<const T*>(g.grad_out) + b * g.grad_out_strides.batch + head * g.grad_out_strides.head;
    load_rows_async<kBlockM, kHeadDim, kThreads>(q_slots + slot * kBlockM * kPitch, q, p.q_strides.row,
                                                 q_tile * kBlockM, p.len_q, p.head_dim);
    load_rows_async<kBlockM, kHeadDim, kThreads>(do_slots + slot * kBlockM * kPitch, d_out, g.grad_out_strides.row,
                                                 q_tile * kBlockM, p.len_q, p.head_dim);
  };
  // Threads below kBlockM fetch lse (in log2 units) and Delta of one row each; padding rows get
  // +inf and 0. Plain loads: issued early, stored to shared memory at the end of the step.
  auto fetch_row_stats = [&](int32_t head, int32_t q_tile, float& lse_log2, float& delta) {
    const int32_t row = q_tile * kBlockM + static_cast<int32_t>(threadIdx.x);
    lse_log2 = INFINITY;
    delta = 0.f;
    if (static_cast<int>(threadIdx.x) < kBlockM && row < p.len_q) {
      const int64_t index = (static_cast<int64_t>(b) * p.heads_q + head) * p.len_q + row;
      lse_log2 = p.lse[index] * kLog2e;
      delta = g.delta[index];
    }
  };
  auto store_row_stats = [&](int slot, float lse_log2, float delta) {
    if (static_cast<int>(threadIdx.x) < kBlockM) {
      lse_slots[slot * kBlockM + threadIdx.x] = lse_log2;
      delta_slots[slot * kBlockM + threadIdx.x] = delta;
    }
  };

  if (first_q_tile < q_tiles) {
    const T* k = static_cast<const T*>(p.k) + b * p.k_strides.batch + kv_head * p.k_strides.head;
    const T* v = static_cast<const T*>(p.v) + b * p.v_strides.batch + kv_head * p.v_strides.head;
    load_rows_async<kBlockN, kHeadDim, kThreads>(k_tile, k, p.k_strides.row, col0, p.len_k, p.head_dim);
    load_rows_async<kBlockN, kHeadDim, kThreads>(v_tile, v, p.v_strides.row, col0, p.len_k, p.head_dim);
    int32_t head = head_begin;
    int32_t q_tile = first_q_tile;
    int slot = 0;
    load_step(head, q_tile, slot);
    cp_async_commit();
    {
      float lse_log2, delta;
      fetch_row_stats(head, q_tile, lse_log2, delta);
      store_row_stats(slot, lse_log2, delta);
    }

    while (true) {
      // This step's copies have landed for this thread; the barrier publishes every thread's,
      // and guarantees every warp finished the previous step (whose buffers are reused next).
      cp_async_wait<0>();
      __syncthreads();

      int32_t next_head = head;
      int32_t next_q_tile = q_tile + 1;
      if (next_q_tile == q_tiles) {
        ++next_head;
        next_q_tile = first_q_tile;
      }
      const bool has_next = next_head < head_end;
      const int next_slot = kStages == 2 ? slot ^ 1 : 0;
      float next_lse_log2 = INFINITY, next_delta = 0.f;
      if constexpr (kStages == 2) {
        if (has_next) {
          load_step(next_head, next_q_tile, next_slot);
          fetch_row_stats(next_head, next_q_tile, next_lse_log2, next_delta);
        }
        cp_async_commit();
      }

      const T* const q_slot = q_slots + slot * kBlockM * kPitch;
      const T* const do_slot = do_slots + slot * kBlockM * kPitch;
      const int32_t row0 = q_tile * kBlockM;

      // ---- 1. S, dP; P and dS to shared memory ----
      {
        const int local_row = row_band * 16 + group;
        const int local_col = row_split * kScoreTiles * 8;
        // The dropout decisions first: while they are computed only their bits are live.
        const uint32_t keep_bits = dropout_keep_bits<kScoreTiles>(p, DropoutGenerator::of(p, b, head), row0 + local_row,
                                                                  col0 + local_col + 2 * quad);
        float s[kScoreTiles][4];
        float dp[kScoreTiles][4];
        scores_and_probability_grads<kType, kHeadDim, kScoreTiles>(s, dp, q_slot + row_band * 16 * kPitch,
                                                                   do_slot + row_band * 16 * kPitch,
                                                                   k_tile + local_col * kPitch,
                                                                   v_tile + local_col * kPitch, lane);
        RowStats stats;
        BIGKERN_UNROLL
        for (int half = 0; half < 2; ++half) {
          stats.lse_log2[half] = lse_slots[slot * kBlockM + local_row + 8 * half];
          stats.delta[half] = delta_slots[slot * kBlockM + local_row + 8 * half];
        }
        const AttentionMask<kType> mask = AttentionMask<kType>::of(p, b, head);
        const bool per_element = mask.present() || !visibility.all_visible(row0, col0 + kBlockN);
        softmax_backward<kType, kScoreTiles>(s, dp, row0 + local_row, col0 + local_col + 2 * quad, stats, keep_bits,
                                             per_element, p, visibility, mask);
        BIGKERN_UNROLL
        for (int n = 0; n < kScoreTiles; ++n) {
          BIGKERN_UNROLL
          for (int half = 0; half < 2; ++half) {
            const int offset = (local_row + 8 * half) * kScorePitch + local_col + n * 8 + 2 * quad;
            *reinterpret_cast<uint32_t*>(p_tile + offset) = pack_pair<kType>(s[n][2 * half], s[n][2 * half + 1]);
            *reinterpret_cast<uint32_t*>(ds_tile + offset) = pack_pair<kType>(dp[n][2 * half], dp[n][2 * half + 1]);
          }
        }
      }
      __syncthreads();

      // ---- 2. dV += P^T dO, dK += dS^T Q (A: P, dS read transposed; B: dO, Q rows = k) ----
      {
        const RowCol at = ldsm_a_trans_address(lane);
        const int col = key_split * kDkvTiles * 8;
        // dV first, then dK: interleaving them would keep both products' operands live at once.
        BIGKERN_UNROLL
        for (int kk = 0; kk < kBlockM / 16; ++kk) {
          uint32_t a[4];
          ldmatrix_x4_trans(a, p_tile + (kk * 16 + at.row) * kScorePitch + key_band * 16 + at.col);
          mma_b_rows_k<kType, kDkvTiles>(acc_dv, a, do_slot + kk * 16 * kPitch + col, kPitch, lane);
        }
        BIGKERN_UNROLL
        for (int kk = 0; kk < kBlockM / 16; ++kk) {
          uint32_t a[4];
          ldmatrix_x4_trans(a, ds_tile + (kk * 16 + at.row) * kScorePitch + key_band * 16 + at.col);
          mma_b_rows_k<kType, kDkvTiles>(acc_dk, a, q_slot + kk * 16 * kPitch + col, kPitch, lane);
        }
      }

      if constexpr (kStages == 1) {
        // The single Q/dO buffer is free once every warp is past step 2.
        __syncthreads();
        if (has_next) {
          load_step(next_head, next_q_tile, next_slot);
          fetch_row_stats(next_head, next_q_tile, next_lse_log2, next_delta);
        }
        cp_async_commit();
      }

      // ---- 3. dQ += dS K into the float32 accumulator (A: dS rows = queries; B: K rows = k) ----
      if (g.dq_accum != nullptr) {
        float acc_dq[kDqTiles][4];
        zero_accumulators(acc_dq);
        const RowCol at = ldsm_a_address(lane);
        const int col = row_split * kDqTiles * 8;
        BIGKERN_UNROLL
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          uint32_t a[4];
          ldmatrix_x4(a, ds_tile + (row_band * 16 + at.row) * kScorePitch + kk * 16 + at.col);
          mma_b_rows_k<kType, kDqTiles>(acc_dq, a, k_tile + kk * 16 * kPitch + col, kPitch, lane);
        }
        float* const dq = g.dq_accum + (static_cast<int64_t>(b) * p.heads_q + head) * p.len_q * p.head_dim;
        BIGKERN_UNROLL
        for (int n = 0; n < kDqTiles; ++n) {
          BIGKERN_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int32_t row = row0 + row_band * 16 + group + 8 * (i >> 1);
            const int c = col + n * 8 + 2 * quad + (i & 1);
            if (row < p.len_q && c < p.head_dim) atomicAdd(dq + static_cast<int64_t>(row) * p.head_dim + c, acc_dq[n][i]);
          }
        }
      }

      if (!has_next) break;
      store_row_stats(next_slot, next_lse_log2, next_delta);
      head = next_head;
      q_tile = next_q_tile;
      slot = next_slot;
    }
  }

  // ---- Epilogue: stage dK * scale and dV in the K/V tiles, then 16-byte stores ----
  cp_async_wait<0>();
  __syncthreads();
  BIGKERN_UNROLL
  for (int n = 0; n < kDkvTiles; ++n) {
    BIGKERN_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int offset = (key_band * 16 + group + 8 * half) * kPitch + key_split * kDkvTiles * 8 + n * 8 + 2 * quad;
      *reinterpret_cast<uint32_t*>(k_tile + offset) =
          pack_pair<kType>(acc_dk[n][2 * half] * p.scale, acc_dk[n][2 * half + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(v_tile + offset) = pack_pair<kType>(acc_dv[n][2 * half], acc_dv[n][2 * half + 1]);
    }
  }
  __syncthreads();
  const int64_t first_key = (static_cast<int64_t>(b) * p.heads_kv + kv_head) * p.len_k + col0;
  const int32_t keys = p.len_k - col0 < kBlockN ? p.len_k - col0 : kBlockN;
  store_rows<kBlockN, kHeadDim, kThreads>(static_cast<T*>(g.grad_k) + first_key * p.head_dim, k_tile, keys, p.head_dim);
  store_rows<kBlockN, kHeadDim, kThreads>(static_cast<T*>(g.grad_v) + first_key * p.head_dim, v_tile, keys, p.head_dim);
}

}  // namespace bigkern::cuda_attention
