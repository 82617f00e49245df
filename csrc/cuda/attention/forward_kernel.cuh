// The CUDA attention forward (FlashAttention-2 scheme, sm_80+ tensor cores), also the per-chunk
// kernel of the split-KV path.
//
// One CTA computes block_m query rows of one (batch, head) (tile shapes: forward_config.h):
//   1. cp.async the Q tile into shared memory once; stream K/V tiles through a kStages-deep ring
//      of shared-memory slots (tile t + kStages - 1 is in flight while tile t is computed).
//   2. Per K/V tile, each warp computes its 16 * m_tiles rows of S = Q K^T with mma.m16n8k16
//      (fp32 accumulators; Q and K fragments by ldmatrix), turns S into log2-unit scores
//      x = S * scale * log2(e) (+ mask * log2(e)), masked to -inf where invisible, and updates
//      the online softmax in registers: running max m and running sum l per row,
//      O <- O * 2^(m_old - m_new) + P V, with P = 2^(x - m_new).
//   3. Dropout zeroes entries of P (after l is summed: lse is that of the undropped softmax).
//   4. P is rounded to q's dtype in registers and used directly as the A operand of P V (the
//      accumulator layout of two n8 tiles is the A layout of one k16 step, fragment_layout.h).
//   5. Epilogue: O / l (times 1 / (1 - dropout_p)), staged through shared memory for 16-byte
//      stores; lse = (m + log2 l) * ln 2, +inf for rows that saw no key (their O is 0).
//
// Causal tiles: key tiles wholly beyond the diagonal of the CTA's last row are never loaded;
// only tiles that straddle it (or the end of the keys, or any tile when a mask is given) take
// the per-element test. Rows and keys beyond Lq / Lk are zero-filled by cp.async, so padding
// never injects NaN or Inf into the products.
//
// kSplitKv: the CTA covers one chunk of the keys and writes its normalised partial O (float32)
// and partial lse (-inf for no visible key) to the workspace; splitkv_kernel.cuh merges them.
//
// Kernels only, naming no host API (the launchers are in forward_launch.cuh), so that
// tests/cuda_host can compile this header as host code under its SIMT emulator.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention/attention_launchers.h"
#include "cuda/attention/attention_masking.cuh"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/forward_config.h"
#include "cuda/attention/sm80_primitives.cuh"

namespace bigkern::cuda_attention {

constexpr int power_of_two_at_least(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

// cp.async of rows [row_begin, row_begin + kRows) and columns [0, kHeadDim) of a row-major
// matrix (last dim contiguous) into a shared tile with row pitch shared_row_elements(kHeadDim).
// Rows at or beyond row_limit and columns at or beyond head_dim are zero-filled.
//
// Each thread copies one 16-byte column chunk of rows r, r + kRowsPerPass, ...: one column test
// and one source pointer advanced by a fixed step. (Spreading chunks linearly over threads
// gives every chunk its own row, column and predicate, which the compiler keeps live across the
// whole key loop and spills at large head dims.) A row of kHeadDim / 8 chunks takes the next
// power of two of lanes; the extra lanes (head dims 96, 160, 192, 224) copy nothing.
template <int kRows, int kHeadDim, typename T>
__device__ __forceinline__ void load_tile_async(T* tile, const T* matrix, int64_t row_stride, int32_t row_begin,
                                                int32_t row_limit, int32_t head_dim) {
  constexpr int kLanesPerRow = power_of_two_at_least(kHeadDim / 8);
  constexpr int kRowsPerPass = kForwardThreads / kLanesPerRow;
  static_assert(kRows % kRowsPerPass == 0, "whole passes");
  const int col = static_cast<int>(threadIdx.x) % kLanesPerRow * 8;
  if (col >= kHeadDim) return;
  const int first_row = static_cast<int>(threadIdx.x) / kLanesPerRow;
  const bool col_in_bounds = col < head_dim;
  BIGKERN_UNROLL
  for (int pass = 0; pass < kRows / kRowsPerPass; ++pass) {
    const int row = first_row + pass * kRowsPerPass;
    const bool in_bounds = col_in_bounds && row_begin + row < row_limit;
    const T* src = in_bounds ? matrix + static_cast<int64_t>(row_begin + row) * row_stride + col : matrix;
    cp_async_16(tile + row * shared_row_elements(kHeadDim) + col, src, in_bounds);
  }
}

template <ElementType kType, int kHeadDim, bool kSplitKv>
__global__ void __launch_bounds__(kForwardThreads)
    attention_forward_kernel(const AttentionParams p, const SplitKvWorkspace split) {
  using T = element_t<kType>;
  constexpr ForwardTile kTile = forward_tile(kHeadDim);
  constexpr int kMTiles = kTile.m_tiles;
  constexpr int kBlockN = kTile.block_n;
  constexpr int kStages = kTile.stages;
  constexpr int kBlockM = forward_block_m(kHeadDim);
  constexpr int kPitch = shared_row_elements(kHeadDim);
  constexpr int kScoreTiles = kBlockN / 8;   // n8 tiles of S per 16 rows
  constexpr int kOutputTiles = kHeadDim / 8;  // n8 tiles of O per 16 rows
  static_assert(kStages >= 2 && kBlockN % 16 == 0 && kHeadDim % 16 == 0, "tile shapes");

  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* const q_tile = reinterpret_cast<T*>(shared_bytes);
  T* const k_slots = q_tile + kBlockM * kPitch;
  T* const v_slots = k_slots + kStages * kBlockN * kPitch;

  // CTA order: query tiles fastest, then key chunks, heads, batch, so that CTAs reading the same
  // K/V (also the query heads of one GQA group) run close together and share L2.
  // (The host keeps the grid below 2^31 CTAs, so 32-bit unsigned division suffices.)
  const uint32_t q_tiles = static_cast<uint32_t>(p.len_q + kBlockM - 1) / kBlockM;
  const uint32_t num_splits = kSplitKv ? static_cast<uint32_t>(split.num_splits) : 1u;
  uint32_t linear = blockIdx.x;
  const int32_t q_tile_index = static_cast<int32_t>(linear % q_tiles);
  linear /= q_tiles;
  const int32_t split_index = static_cast<int32_t>(linear % num_splits);
  linear /= num_splits;
  const int32_t h = static_cast<int32_t>(linear % static_cast<uint32_t>(p.heads_q));
  const int32_t b = static_cast<int32_t>(linear / static_cast<uint32_t>(p.heads_q));
  const int32_t kv_head = h / p.kv_group;
  const int32_t row0 = q_tile_index * kBlockM;

  const T* const q = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head;
  const T* const k = static_cast<const T*>(p.k) + b * p.k_strides.batch + kv_head * p.k_strides.head;
  const T* const v = static_cast<const T*>(p.v) + b * p.v_strides.batch + kv_head * p.v_strides.head;

  // Keys this CTA visits: up to the last one visible to its last real row, within its chunk.
  const KeyVisibility visibility = KeyVisibility::of(p);
  const int32_t last_row = (row0 + kBlockM < p.len_q ? row0 + kBlockM : p.len_q) - 1;
  int32_t key_begin = 0;
  int32_t key_end = visibility.key_end(last_row);
  if constexpr (kSplitKv) {
    const int64_t chunk_begin = static_cast<int64_t>(split_index) * split.keys_per_split;
    const int64_t chunk_end = chunk_begin + split.keys_per_split;
    key_begin = static_cast<int32_t>(chunk_begin < key_end ? chunk_begin : key_end);
    key_end = static_cast<int32_t>(chunk_end < key_end ? chunk_end : key_end);
  }
  const int32_t key_tiles = (key_end - key_begin + kBlockN - 1) / kBlockN;

  auto load_key_tile = [&](int32_t tile) {
    const int slot = tile % kStages;
    const int32_t col0 = key_begin + tile * kBlockN;
    const int offset = slot * kBlockN * kPitch;
    load_tile_async<kBlockN, kHeadDim>(k_slots + offset, k, p.k_strides.row, col0, p.len_k, p.head_dim);
    load_tile_async<kBlockN, kHeadDim>(v_slots + offset, v, p.v_strides.row, col0, p.len_k, p.head_dim);
  };

  // Pipeline prologue: Q and the first kStages - 1 K/V tiles, one commit group per tile (Q rides
  // with the first). Groups are committed even when empty so that group g always holds tile g.
  load_tile_async<kBlockM, kHeadDim>(q_tile, q, p.q_strides.row, row0, p.len_q, p.head_dim);
  BIGKERN_UNROLL
  for (int stage = 0; stage < kStages - 1; ++stage) {
    if (stage < key_tiles) load_key_tile(stage);
    cp_async_commit();
  }

  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp_row0 = static_cast<int>(threadIdx.x) / 32 * kMTiles * 16;  // first row of this warp in the tile
  const int group = lane >> 2;                                             // accumulator row within 8
  const int quad = lane & 3;                                               // accumulator column pair
  const RowCol a_address = ldsm_a_address(lane);
  const RowCol b_address = ldsm_b_address(lane);
  const RowCol b_trans_address = ldsm_b_trans_address(lane);

  // Per thread: rows warp_row0 + 16 * mt + group + 8 * half, for mt < kMTiles, half < 2.
  float acc_o[kMTiles][kOutputTiles][4];
  float row_max[kMTiles][2];  // log2 units, -inf until a visible key was seen
  float row_sum[kMTiles][2];  // this thread's share of l (its columns); summed over the quad at the end
  BIGKERN_UNROLL
  for (int mt = 0; mt < kMTiles; ++mt) {
    BIGKERN_UNROLL
    for (int dt = 0; dt < kOutputTiles; ++dt) {
      BIGKERN_UNROLL
      for (int i = 0; i < 4; ++i) acc_o[mt][dt][i] = 0.f;
    }
    BIGKERN_UNROLL
    for (int half = 0; half < 2; ++half) {
      row_max[mt][half] = -INFINITY;
      row_sum[mt][half] = 0.f;
    }
  }

  for (int32_t tile = 0; tile < key_tiles; ++tile) {
    // Tile `tile` (group `tile`) has landed for this thread; the barrier publishes every thread's
    // copies and guarantees that all warps finished tile - 1, whose slot the next load reuses.
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < key_tiles) load_key_tile(tile + kStages - 1);
    cp_async_commit();

    const T* const k_tile = k_slots + (tile % kStages) * kBlockN * kPitch;
    const T* const v_tile = v_slots + (tile % kStages) * kBlockN * kPitch;
    const int32_t col0 = key_begin + tile * kBlockN;

    // Warps whose rows all lie beyond Lq (decoding: Lq is often 1) skip both products; they
    // still share the loads and barriers (and run the cheap softmax on zeros). Warp-uniform, as
    // ldmatrix and mma need.
    const bool warp_has_rows = row0 + warp_row0 < p.len_q;
    // ---- S = Q K^T ----
    float acc_s[kMTiles][kScoreTiles][4];
    BIGKERN_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      BIGKERN_UNROLL
      for (int nt = 0; nt < kScoreTiles; ++nt) {
        BIGKERN_UNROLL
        for (int i = 0; i < 4; ++i) acc_s[mt][nt][i] = 0.f;
      }
    }
    // Not unrolled across k steps: fully unrolled, the compiler hoists every step's Q and K
    // fragments at once and spills at the larger head dims; one step live at a time suffices.
    const int k_steps = warp_has_rows ? kHeadDim / 16 : 0;
    BIGKERN_NO_UNROLL
    for (int kk = 0; kk < k_steps; ++kk) {
      uint32_t a[kMTiles][4];
      BIGKERN_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        ldmatrix_x4(a[mt], q_tile + (warp_row0 + mt * 16 + a_address.row) * kPitch + kk * 16 + a_address.col);
      }
      BIGKERN_UNROLL
      for (int np = 0; np < kScoreTiles / 2; ++np) {
        uint32_t bk[4];
        ldmatrix_x4(bk, k_tile + (np * 16 + b_address.row) * kPitch + kk * 16 + b_address.col);
        BIGKERN_UNROLL
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_m16n8k16<kType>(acc_s[mt][2 * np], a[mt], bk[0], bk[1]);
          mma_m16n8k16<kType>(acc_s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    // ---- Scores in log2 units, masked where needed ----
    // The mask and dropout views are built where used, from the kernel parameters (constant
    // memory), rather than held in registers across the key loop.
    if (p.mask_kind != MaskKind::kNone || !visibility.all_visible(row0, col0 + kBlockN)) {
      const AttentionMask<kType> mask = AttentionMask<kType>::of(p, b, h);
      BIGKERN_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        BIGKERN_UNROLL
        for (int nt = 0; nt < kScoreTiles; ++nt) {
          BIGKERN_UNROLL
          for (int i = 0; i < 4; ++i) {
            const RowCol at = mma_c_element(lane, i);
            acc_s[mt][nt][i] = masked_score(acc_s[mt][nt][i] * p.scale_log2, row0 + warp_row0 + mt * 16 + at.row,
                                            col0 + nt * 8 + at.col, p.len_q, visibility, mask);
          }
        }
      }
    } else {
      BIGKERN_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        BIGKERN_UNROLL
        for (int nt = 0; nt < kScoreTiles; ++nt) {
          BIGKERN_UNROLL
          for (int i = 0; i < 4; ++i) acc_s[mt][nt][i] *= p.scale_log2;
        }
      }
    }

    // ---- Online softmax; accumulator elements 2 * half and 2 * half + 1 lie in row group + 8 * half ----
    BIGKERN_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      BIGKERN_UNROLL
      for (int half = 0; half < 2; ++half) {
        float tile_max = -INFINITY;
        BIGKERN_UNROLL
        for (int nt = 0; nt < kScoreTiles; ++nt) {
          tile_max = fmaxf(tile_max, fmaxf(acc_s[mt][nt][2 * half], acc_s[mt][nt][2 * half + 1]));
        }
        const float new_max = fmaxf(row_max[mt][half], quad_max(tile_max));
        // A row with no visible key so far keeps max -inf; subtracting 0 instead keeps every
        // exponent -inf (weight 0) rather than NaN.
        const float base = new_max == -INFINITY ? 0.f : new_max;
        const float correction = fast_exp2(row_max[mt][half] - base);
        row_max[mt][half] = new_max;
        float sum = 0.f;
        BIGKERN_UNROLL
        for (int nt = 0; nt < kScoreTiles; ++nt) {
          BIGKERN_UNROLL
          for (int j = 0; j < 2; ++j) {
            const float weight = fast_exp2(acc_s[mt][nt][2 * half + j] - base);
            acc_s[mt][nt][2 * half + j] = weight;
            sum += weight;
          }
        }
        row_sum[mt][half] = row_sum[mt][half] * correction + sum;
        BIGKERN_UNROLL
        for (int dt = 0; dt < kOutputTiles; ++dt) {
          acc_o[mt][dt][2 * half] *= correction;
          acc_o[mt][dt][2 * half + 1] *= correction;
        }
      }
    }

    // ---- Dropout on P (l above is of the undropped weights) ----
    if (p.has_dropout) {
      const DropoutGenerator dropout = DropoutGenerator::of(p, b, h);
      BIGKERN_UNROLL
      for (int mt = 0; mt < kMTiles; ++mt) {
        BIGKERN_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int32_t row = row0 + warp_row0 + mt * 16 + group + 8 * half;
          BIGKERN_UNROLL
          for (int nt = 0; nt < kScoreTiles; ++nt) {
            bool keep_first, keep_second;
            dropout.keep_pair(row, col0 + nt * 8 + 2 * quad, keep_first, keep_second);
            if (!keep_first) acc_s[mt][nt][2 * half] = 0.f;
            if (!keep_second) acc_s[mt][nt][2 * half + 1] = 0.f;
          }
        }
      }
    }

    // ---- O += P V, P from registers ----
    // P rounded and packed as the A operands of the kBlockN / 16 k steps (half the registers of
    // the fp32 scores, which die here).
    uint32_t p_frag[kMTiles][kBlockN / 16][4];
    BIGKERN_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      BIGKERN_UNROLL
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        BIGKERN_UNROLL
        for (int r = 0; r < 4; ++r) {
          const AccumulatorSource low = accumulator_to_a_source(2 * r);
          const AccumulatorSource high = accumulator_to_a_source(2 * r + 1);
          p_frag[mt][kk][r] =
              pack_pair<kType>(acc_s[mt][2 * kk + low.tile][low.c], acc_s[mt][2 * kk + high.tile][high.c]);
        }
      }
    }
    if (warp_has_rows) {
      BIGKERN_UNROLL
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        BIGKERN_UNROLL
        for (int dp = 0; dp < kOutputTiles / 2; ++dp) {
          uint32_t bv[4];
          ldmatrix_x4_trans(bv, v_tile + (kk * 16 + b_trans_address.row) * kPitch + dp * 16 + b_trans_address.col);
          BIGKERN_UNROLL
          for (int mt = 0; mt < kMTiles; ++mt) {
            mma_m16n8k16<kType>(acc_o[mt][2 * dp], p_frag[mt][kk], bv[0], bv[1]);
            mma_m16n8k16<kType>(acc_o[mt][2 * dp + 1], p_frag[mt][kk], bv[2], bv[3]);
          }
        }
      }
    }
  }

  // ---- Epilogue ----
  // No copy may still be writing shared memory (with no key tile, Q's is still pending), and
  // every warp must be done with the K/V slots before the Q tile is reused for the output.
  cp_async_wait<0>();
  __syncthreads();

  const float out_scale = p.has_dropout ? p.dropout_rescale : 1.f;
  float lse[kMTiles][2];
  BIGKERN_UNROLL
  for (int mt = 0; mt < kMTiles; ++mt) {
    BIGKERN_UNROLL
    for (int half = 0; half < 2; ++half) {
      const float total = quad_sum(row_sum[mt][half]);
      // A row whose max is finite has l >= 1 (its max term is 2^0); -inf means no visible key.
      const bool empty = row_max[mt][half] == -INFINITY;
      const float inverse = empty ? 0.f : out_scale / total;
      BIGKERN_UNROLL
      for (int dt = 0; dt < kOutputTiles; ++dt) {
        acc_o[mt][dt][2 * half] *= inverse;
        acc_o[mt][dt][2 * half + 1] *= inverse;
      }
      const float no_key = kSplitKv ? -INFINITY : INFINITY;
      lse[mt][half] = empty ? no_key : (row_max[mt][half] + log2f(total)) * kLn2;
    }
  }

  const int64_t problem = static_cast<int64_t>(b) * p.heads_q + h;
  if constexpr (kSplitKv) {
    const int64_t chunk_rows = (static_cast<int64_t>(split_index) * p.batch * p.heads_q + problem) * p.len_q;
    BIGKERN_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      BIGKERN_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int32_t row = row0 + warp_row0 + mt * 16 + group + 8 * half;
        if (row >= p.len_q) continue;
        if (quad == 0) split.partial_lse[chunk_rows + row] = lse[mt][half];
        float* const out_row = split.partial_out + (chunk_rows + row) * p.head_dim;
        BIGKERN_UNROLL
        for (int dt = 0; dt < kOutputTiles; ++dt) {
          const int col = dt * 8 + 2 * quad;
          if (col < p.head_dim) {
            *reinterpret_cast<float2*>(out_row + col) =
                make_float2(acc_o[mt][dt][2 * half], acc_o[mt][dt][2 * half + 1]);
          }
        }
      }
    }
  } else {
    // Stage the rounded output in the Q tile (each warp writes only its own rows, which only it
    // read), then store whole 16-byte row chunks.
    BIGKERN_UNROLL
    for (int mt = 0; mt < kMTiles; ++mt) {
      BIGKERN_UNROLL
      for (int half = 0; half < 2; ++half) {
        const int local_row = warp_row0 + mt * 16 + group + 8 * half;
        const int32_t row = row0 + local_row;
        if (quad == 0 && row < p.len_q) p.lse[problem * p.len_q + row] = lse[mt][half];
        BIGKERN_UNROLL
        for (int dt = 0; dt < kOutputTiles; ++dt) {
          *reinterpret_cast<uint32_t*>(q_tile + local_row * kPitch + dt * 8 + 2 * quad) =
              pack_pair<kType>(acc_o[mt][dt][2 * half], acc_o[mt][dt][2 * half + 1]);
        }
      }
    }
    __syncthreads();
    T* const out = static_cast<T*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head;
    constexpr int kChunksPerRow = kHeadDim / 8;
    static_assert(kBlockM * kChunksPerRow % kForwardThreads == 0, "every thread stores the same number of chunks");
    BIGKERN_UNROLL
    for (int i = 0; i < kBlockM * kChunksPerRow / kForwardThreads; ++i) {
      const int chunk = i * kForwardThreads + static_cast<int>(threadIdx.x);
      const int local_row = chunk / kChunksPerRow;
      const int col = (chunk % kChunksPerRow) * 8;
      if (row0 + local_row < p.len_q && col < p.head_dim) {
        *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row0 + local_row) * p.out_strides.row + col) =
            *reinterpret_cast<const uint4*>(q_tile + local_row * kPitch + col);
      }
    }
  }
}

}  // namespace bigkern::cuda_attention
