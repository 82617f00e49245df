// Which matrix element each lane holds in the warp-level tensor-core fragments, and which
// shared-memory row each lane hands to ldmatrix. Pure index math, host and device, so that
// tests/cuda_host/test_fragment_layout.cpp can check on the CPU that the addresses the kernels
// give to ldmatrix deliver exactly the elements mma expects.
//
// Transcribed from the PTX ISA (section "Matrix Fragments for mma.m16n8k16 with floating point
// type", .f16/.bf16 inputs, .f32 accumulators; and "ldmatrix"). Notation: lane in [0, 32),
//   group = lane >> 2    (the PTX "groupID")
//   quad  = lane & 3     (the PTX "threadID_in_group")
//
// mma.sync.aligned.m16n8k16.row.col: D (16x8) = A (16x16, row) * B (16x8, col) + C.
//   A: 4 registers a0..a3 = 8 halves (element i is half i & 1 of register i >> 1):
//        row = group      for i in {0,1,4,5},  group + 8 otherwise
//        col = 2*quad + (i & 1)  for i < 4,     2*quad + (i & 1) + 8 for i >= 4
//   B: 2 registers b0, b1 = 4 halves (element i: half i & 1 of register i >> 1):
//        row (k) = 2*quad + (i & 1) for i < 2,  2*quad + (i & 1) + 8 for i >= 2
//        col (n) = group
//   C/D: 4 floats c0..c3:
//        row = group for i < 2, group + 8 otherwise;  col = 2*quad + (i & 1)
//   A packed pair holds its lower-indexed element in the low 16 bits.
//
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: lanes 8m..8m+7 give the addresses
// of rows 0..7 of matrix m (x2 uses lanes 0..15, x1 lanes 0..7; the other lanes' addresses are
// ignored); every row is 8 contiguous 16-bit elements (16 bytes, 16-byte aligned). Register m
// of each lane receives two elements of matrix m:
//   plain:  row = group, cols 2*quad and 2*quad + 1 (low half, high half)
//   .trans: rows 2*quad and 2*quad + 1 (low half, high half), col = group
#pragma once

#if defined(__CUDACC__)
#define BIGKERN_FRAGMENT_FN __host__ __device__ __forceinline__ constexpr
#else
#define BIGKERN_FRAGMENT_FN inline constexpr
#endif

namespace bigkern::cuda_attention {

struct RowCol {
  int row;
  int col;
};

// ---- The PTX tables ---------------------------------------------------------------------------

BIGKERN_FRAGMENT_FN RowCol mma_a_element(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  const bool upper_rows = !(i < 2 || (i >= 4 && i < 6));
  return {group + (upper_rows ? 8 : 0), 2 * quad + (i & 1) + (i >= 4 ? 8 : 0)};
}

BIGKERN_FRAGMENT_FN RowCol mma_b_element(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {2 * quad + (i & 1) + (i >= 2 ? 8 : 0), group};
}

BIGKERN_FRAGMENT_FN RowCol mma_c_element(int lane, int i) {
  const int group = lane >> 2, quad = lane & 3;
  return {group + (i >= 2 ? 8 : 0), 2 * quad + (i & 1)};
}

// Element (row, col) of its 8x8 matrix that half `half` of a lane's ldmatrix register holds.
BIGKERN_FRAGMENT_FN RowCol ldmatrix_element(int lane, int half, bool transposed) {
  const int group = lane >> 2, quad = lane & 3;
  return transposed ? RowCol{2 * quad + half, group} : RowCol{group, 2 * quad + half};
}

// ---- The addresses the kernels hand to ldmatrix.x4 --------------------------------------------
// Each returns, for a lane, the (row, first col) of the 16-byte row it points at, relative to the
// top-left corner of the 16x16 block being loaded from a row-major shared-memory tile.

// A operand of a 16x16 block of a row-major M x K tile (Q as rows = queries, cols = head dim).
// Matrices: 0 = rows 0-7 / cols 0-7, 1 = rows 8-15 / cols 0-7, 2 = rows 0-7 / cols 8-15,
// 3 = rows 8-15 / cols 8-15, so registers 0..3 are exactly a0..a3 of the mma table.
BIGKERN_FRAGMENT_FN RowCol ldsm_a_address(int lane) {
  return {(lane & 7) + ((lane >> 3) & 1) * 8, (lane >> 4) * 8};
}

// B operands of two adjacent n8 tiles from a row-major N x K tile (K as rows = keys, cols = head
// dim: B[k][n] = K[n][k]). Matrices: 0 = n 0-7 / k 0-7, 1 = n 0-7 / k 8-15, 2 = n 8-15 / k 0-7,
// 3 = n 8-15 / k 8-15: registers {0, 1} are b0, b1 of n tile 0 and {2, 3} those of n tile 1.
BIGKERN_FRAGMENT_FN RowCol ldsm_b_address(int lane) {
  return {(lane & 7) + (lane >> 4) * 8, ((lane >> 3) & 1) * 8};
}

// B operands of two adjacent n8 tiles from a row-major K x N tile read with .trans (V as rows =
// keys = k, cols = head dim = n). Matrices: 0 = k 0-7 / n 0-7, 1 = k 8-15 / n 0-7,
// 2 = k 0-7 / n 8-15, 3 = k 8-15 / n 8-15: registers {0, 1} are b0, b1 of n tile 0, {2, 3} of
// n tile 1.
BIGKERN_FRAGMENT_FN RowCol ldsm_b_trans_address(int lane) {
  return {(lane & 7) + ((lane >> 3) & 1) * 8, (lane >> 4) * 8};
}

// ---- Accumulator to A operand ------------------------------------------------------------------
// The fp32 accumulator of two adjacent n8 tiles (columns 0-7 and 8-15) holds, per lane, exactly
// the elements that the A operand of a k16 step over those 16 columns needs:
//   a0a1 = tile 0 {c0, c1}, a2a3 = tile 0 {c2, c3}, a4a5 = tile 1 {c0, c1}, a6a7 = tile 1 {c2, c3}.
// So P = softmax(S) feeds the P V product from registers. accumulator_to_a_source gives, for A
// element i, which (tile, c index) it comes from.
struct AccumulatorSource {
  int tile;  // 0 or 1: columns 0-7 or 8-15 of the k16 step
  int c;     // accumulator element index 0..3
};

BIGKERN_FRAGMENT_FN AccumulatorSource accumulator_to_a_source(int i) {
  return {i >> 2, ((i >> 1) & 1) * 2 + (i & 1)};
}

}  // namespace bigkern::cuda_attention
