// Device building blocks shared by the backward kernels (backward_kernel.cuh computes dK and dV,
// and dQ with atomics; backward_dq_kernel.cuh computes dQ without): tile copies between global
// and shared memory, the warp-level products with their operand addressing, and the recomputed
// softmax gradient of one 16-row block.
//
// Operand addressing (fragment_layout.h, backward_fragment_layout.h; all tiles are row-major in
// shared memory with a padded pitch):
//   A from a tile whose rows are m (Q, dO, dS):             ldmatrix,        ldsm_a_address
//   A from a tile whose rows are k (P, dS read transposed): ldmatrix .trans, ldsm_a_trans_address
//   B from a tile whose rows are n (K, V in S = Q K^T):     ldmatrix,        ldsm_b_address
//   B from a tile whose rows are k (dO, Q, K as the right
//     factor of P^T dO, dS^T Q, dS K):                      ldmatrix .trans, ldsm_b_trans_address
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention_masking.cuh"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_fragment_layout.h"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

// How kThreads threads share the 16-byte chunks of a tile of kRows rows of kHeadDim elements: a
// thread keeps one chunk column and walks down the rows, kRowsPerRound at a time, so its
// addresses differ from round to round by a multiple of the row stride (one base pointer per
// thread; a mapping that cut chunks linearly would give every round its own row and column, all
// of them held in registers across the main loop). Threads beyond kRowsPerRound whole rows idle.
template <int kRows, int kHeadDim, int kThreads>
struct RowChunks {
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static_assert(kChunksPerRow <= kThreads, "a round covers at least one row");
  static constexpr int kRowsPerRound = kThreads / kChunksPerRow;
  static constexpr int kRounds = (kRows + kRowsPerRound - 1) / kRowsPerRound;
  int row;  // of round 0; round i adds i * kRowsPerRound
  int col;
  bool active;
  __device__ __forceinline__ RowChunks()
      : row(static_cast<int>(threadIdx.x) / kChunksPerRow),
        col(static_cast<int>(threadIdx.x) % kChunksPerRow * 8),
        active(static_cast<int>(threadIdx.x) < kRowsPerRound * kChunksPerRow) {}
  __device__ __forceinline__ bool has(int round) const {
    return active && (kRows % kRowsPerRound == 0 || row + round * kRowsPerRound < kRows);
  }
};

// cp.async of rows [row_begin, row_begin + kRows) and columns [0, kHeadDim) of a row-major matrix
// (last dim contiguous, rows 16-byte aligned) into a shared tile of pitch kHeadDim + 8, shared by
// kThreads threads. Rows at or beyond row_limit and columns at or beyond head_dim are
// zero-filled, so padding adds nothing to any product and never injects NaN or Inf.
template <int kRows, int kHeadDim, int kThreads, typename T>
__device__ __forceinline__ void load_rows_async(T* tile, const T* matrix, int64_t row_stride, int32_t row_begin,
                                                int32_t row_limit, int32_t head_dim) {
  using Chunks = RowChunks<kRows, kHeadDim, kThreads>;
  const Chunks chunks;
  const T* src = matrix + static_cast<int64_t>(row_begin + chunks.row) * row_stride + chunks.col;
  BIGKERN_UNROLL
  for (int round = 0; round < Chunks::kRounds; ++round) {
    const int row = chunks.row + round * Chunks::kRowsPerRound;
    if (chunks.has(round)) {
      const bool in_bounds = row_begin + row < row_limit && chunks.col < head_dim;
      cp_async_16(tile + row * (kHeadDim + 8) + chunks.col,
                  in_bounds ? src + static_cast<int64_t>(round * Chunks::kRowsPerRound) * row_stride : matrix,
                  in_bounds);
    }
  }
}

// Copies rows [0, row_count) and columns [0, head_dim) of a shared tile of pitch kHeadDim + 8 to
// a row-major matrix with rows of head_dim elements (the contiguous gradients), 16 bytes a time.
template <int kRows, int kHeadDim, int kThreads, typename T>
__device__ __forceinline__ void store_rows(T* matrix, const T* tile, int32_t row_count, int32_t head_dim) {
  using Chunks = RowChunks<kRows, kHeadDim, kThreads>;
  const Chunks chunks;
  BIGKERN_UNROLL
  for (int round = 0; round < Chunks::kRounds; ++round) {
    const int row = chunks.row + round * Chunks::kRowsPerRound;
    if (chunks.has(round) && row < row_count && chunks.col < head_dim) {
      *reinterpret_cast<uint4*>(matrix + static_cast<int64_t>(row) * head_dim + chunks.col) =
          *reinterpret_cast<const uint4*>(tile + row * (kHeadDim + 8) + chunks.col);
    }
  }
}

// acc[n] += A * B_n for the kNTiles n8 tiles of one k16 step, B[k][n] = tile[n * pitch + k]:
// the tile's rows are the n index (K or V in S = Q K^T, dP = dO V^T). `tile` points at (n 0, k 0).
// Pairs of n8 tiles come from one ldmatrix.x4; an odd last tile from an .x2, which reads the
// addresses of lanes 0-15 only (the same formula: matrix 0 = n 0-7 / k 0-7, 1 = n 0-7 / k 8-15).
template <ElementType kType, int kNTiles, typename T>
__device__ __forceinline__ void mma_b_rows_n(float (&acc)[kNTiles][4], const uint32_t (&a)[4], const T* tile, int pitch,
                                             int lane) {
  const RowCol at = ldsm_b_address(lane);
  BIGKERN_UNROLL
  for (int np = 0; np < kNTiles / 2; ++np) {
    uint32_t b[4];
    ldmatrix_x4(b, tile + (np * 16 + at.row) * pitch + at.col);
    mma_m16n8k16<kType>(acc[2 * np], a, b[0], b[1]);
    mma_m16n8k16<kType>(acc[2 * np + 1], a, b[2], b[3]);
  }
  if constexpr (kNTiles % 2 == 1) {
    uint32_t b[2];
    ldmatrix_x2(b, tile + ((kNTiles - 1) * 8 + at.row) * pitch + at.col);
    mma_m16n8k16<kType>(acc[kNTiles - 1], a, b[0], b[1]);
  }
}

// The same with B[k][n] = tile[k * pitch + n]: the tile's rows are the k index (dO and Q in
// dV += P^T dO and dK += dS^T Q, K in dQ += dS K), read with .trans. An .x2 uses lanes 0-15:
// matrix 0 = k 0-7 / n 0-7, 1 = k 8-15 / n 0-7, which is what ldsm_b_trans_address gives them.
template <ElementType kType, int kNTiles, typename T>
__device__ __forceinline__ void mma_b_rows_k(float (&acc)[kNTiles][4], const uint32_t (&a)[4], const T* tile, int pitch,
                                             int lane) {
  const RowCol at = ldsm_b_trans_address(lane);
  BIGKERN_UNROLL
  for (int np = 0; np < kNTiles / 2; ++np) {
    uint32_t b[4];
    ldmatrix_x4_trans(b, tile + at.row * pitch + np * 16 + at.col);
    mma_m16n8k16<kType>(acc[2 * np], a, b[0], b[1]);
    mma_m16n8k16<kType>(acc[2 * np + 1], a, b[2], b[3]);
  }
  if constexpr (kNTiles % 2 == 1) {
    uint32_t b[2];
    ldmatrix_x2_trans(b, tile + at.row * pitch + (kNTiles - 1) * 8 + at.col);
    mma_m16n8k16<kType>(acc[kNTiles - 1], a, b[0], b[1]);
  }
}

template <int kNTiles>
__device__ __forceinline__ void zero_accumulators(float (&acc)[kNTiles][4]) {
  BIGKERN_UNROLL
  for (int n = 0; n < kNTiles; ++n) {
    BIGKERN_UNROLL
    for (int i = 0; i < 4; ++i) acc[n][i] = 0.f;
  }
}

// S = Q K^T and dP = dO V^T of one warp: 16 query rows (q_rows, do_rows point at the first)
// against kNTiles * 8 keys (k_rows, v_rows point at the first), over the whole head dim.
template <ElementType kType, int kHeadDim, int kNTiles, typename T>
__device__ __forceinline__ void scores_and_probability_grads(float (&s)[kNTiles][4], float (&dp)[kNTiles][4],
                                                             const T* q_rows, const T* do_rows, const T* k_rows,
                                                             const T* v_rows, int lane) {
  constexpr int kPitch = kHeadDim + 8;
  zero_accumulators(s);
  zero_accumulators(dp);
  const RowCol at = ldsm_a_address(lane);
  BIGKERN_UNROLL
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, q_rows + at.row * kPitch + kk * 16 + at.col);
    mma_b_rows_n<kType, kNTiles>(s, a, k_rows + kk * 16, kPitch, lane);
    ldmatrix_x4(a, do_rows + at.row * kPitch + kk * 16 + at.col);
    mma_b_rows_n<kType, kNTiles>(dp, a, v_rows + kk * 16, kPitch, lane);
  }
}

// The per-row statistics of the two rows a lane's accumulators hold (rows group and group + 8
// of its 16-row block): lse in log2 units (+inf for a row with no visible key, and for padding
// rows beyond Lq, so that P = 0 there) and Delta = rowsum(dO * O) (0 for padding rows).
struct RowStats {
  float lse_log2[2];
  float delta[2];
};

// The dropout decisions of a warp's block as bits: bit 4 * n + 2 * half + j keeps element
// 2 * half + j of n8 tile n (row row_lo + 8 * half, key col_lo + 8 * n + j; col_lo even). All
// ones without dropout. The loop is deliberately not unrolled: one Philox evaluation is live at a
// time (unrolled, the compiler interleaves them all and runs out of registers) and its code is
// emitted once. A thread holds at most 8 n8 tiles (backward_config.h), so 32 bits suffice.
template <int kNTiles>
__device__ __forceinline__ uint32_t dropout_keep_bits(const AttentionParams& p, const DropoutGenerator& dropout,
                                                      int32_t row_lo, int32_t col_lo) {
  static_assert(kNTiles * 4 <= 32, "one bit per accumulator element");
  if (!p.has_dropout) return 0xFFFFFFFFu;
  uint32_t bits = 0;
  BIGKERN_NO_UNROLL
  for (int n = 0; n < kNTiles; ++n) {
    for (int half = 0; half < 2; ++half) {
      bool keep_first, keep_second;
      dropout.keep_pair(row_lo + 8 * half, col_lo + 8 * n, keep_first, keep_second);
      bits |= (static_cast<uint32_t>(keep_first) | static_cast<uint32_t>(keep_second) << 1) << (4 * n + 2 * half);
    }
  }
  return bits;
}

// Recomputes the softmax of one warp's block and turns it into what the products need.
// On entry s = Q K^T and dp = dO V^T (unscaled) for rows row_lo (accumulator elements 0, 1) and
// row_lo + 8 (elements 2, 3), keys col_lo + 8 * n + {0, 1} (col_lo = the block's first key
// + 2 * quad). On return:
//   s  = P * Z / (1 - p)                  (the weights the forward multiplied V with; dV = s^T dO)
//   dp = P * (dP * Z / (1 - p) - Delta)   (dS, the gradient of the scaled, masked score)
// with P = 2^(x - lse_log2), x = q.k * scale * log2(e) + mask * log2(e) (-inf where not
// visible), and Z the dropout keep mask (keep_bits, from dropout_keep_bits). `per_element`
// selects the visibility/mask test; without it every element is visible and unmasked (the caller
// knows this per tile), and padding rows still give P = 0 through their lse of +inf.
template <ElementType kType, int kNTiles>
__device__ __forceinline__ void softmax_backward(float (&s)[kNTiles][4], float (&dp)[kNTiles][4], int32_t row_lo,
                                                 int32_t col_lo, const RowStats& stats, uint32_t keep_bits,
                                                 bool per_element, const AttentionParams& p,
                                                 const KeyVisibility& visibility, const AttentionMask<kType>& mask) {
  const float rescale = p.has_dropout ? p.dropout_rescale : 1.f;
  BIGKERN_UNROLL
  for (int n = 0; n < kNTiles; ++n) {
    BIGKERN_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int half = i >> 1;
      float x = s[n][i] * p.scale_log2;
      if (per_element) x = masked_score(x, row_lo + 8 * half, col_lo + 8 * n + (i & 1), p.len_q, visibility, mask);
      const float probability = fast_exp2(x - stats.lse_log2[half]);
      const float kept = (keep_bits >> (4 * n + i)) & 1u ? rescale : 0.f;
      dp[n][i] = probability * (dp[n][i] * kept - stats.delta[half]);
      s[n][i] = probability * kept;
    }
  }
}

}  // namespace bigkern::cuda_attention
