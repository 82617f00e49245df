// CPU checks of the backward's pure index math (no GPU, no emulator):
//   1. ldsm_a_trans_address: an ldmatrix.x4.trans at the addresses it gives, over a tile that
//      holds A transposed (stored[k][m] = A[m][k]), hands every lane exactly the A fragment the
//      mma.m16n8k16 table asks for (PTX ISA; written out below, not taken from fragment_layout.h);
//   2. the tile table of backward_config.h: every warp arrangement covers its product exactly,
//      and the shared-memory figures of its header comment and the 99 KB bound hold.
// Built and run by tests/cuda_host/attention_backward/run.sh.
#include <cstdio>
#include <set>
#include <utility>

#include "cuda/attention/backward_config.h"
#include "cuda/attention/backward_fragment_layout.h"

namespace {

using namespace bigkern::cuda_attention;

int failures = 0;

void expect(bool condition, const char* what, int a = 0, int b = 0) {
  if (!condition) {
    std::printf("FAIL: %s (%d, %d)\n", what, a, b);
    ++failures;
  }
}

// mma.m16n8k16 A fragment (PTX ISA): element i of lane -> (row, col) of the 16x16 A.
std::pair<int, int> ptx_a(int lane, int i) {
  const int group = lane >> 2, tid = lane % 4;
  const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
  const int col = 2 * tid + (i & 1) + (i >= 4 ? 8 : 0);
  return {row, col};
}

void check_trans_a_addressing() {
  // Stored tile: 16 rows (k) of 16 columns (m); its element (k, m) encodes A[m][k] as m * 16 + k.
  // ldmatrix .trans: register r of lane l holds elements (2 * (l % 4) + h, l / 4) of matrix r,
  // h = 0 low, 1 high, where matrix r's row j is the 8 elements at the address of lane 8r + j.
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r) {
      for (int h = 0; h < 2; ++h) {
        const int source_lane = 8 * r + 2 * (lane % 4) + h;
        const RowCol at = ldsm_a_trans_address(source_lane);
        expect(at.col % 8 == 0 && at.row >= 0 && at.row < 16 && at.col < 16, "address inside the 16x16 block",
               source_lane);
        const int stored_k = at.row;
        const int stored_m = at.col + lane / 4;
        const auto [row, col] = ptx_a(lane, 2 * r + h);  // A element 2r + h sits in register r
        expect(stored_m == row && stored_k == col, "transposed A element", lane, 2 * r + h);
      }
    }
  }
}

void check_tiles() {
  for (const int bucket : {32, 64, 96, 128, 160, 192, 224, 256}) {
    const BackwardTile t = backward_tile(bucket);
    const int row_bands = t.block_m / 16, key_bands = t.block_n / 16;
    // Step 1 (block_m x block_n), step 2 (block_n x D), step 3 (block_m x D): every warp owns a
    // distinct 16-row band and column range, together covering the product.
    std::set<std::pair<int, int>> step1, step2, step3;
    for (int warp = 0; warp < t.warps; ++warp) {
      const int s1 = t.block_n / backward_key_splits(bucket), s2 = bucket / backward_dkv_splits(bucket),
                s3 = bucket / backward_dq_splits(bucket);
      step1.insert({warp % row_bands, warp / row_bands * s1});
      step2.insert({warp % key_bands, warp / key_bands * s2});
      step3.insert({warp % row_bands, warp / row_bands * s3});
      expect(s1 % 8 == 0 && s2 % 8 == 0 && s3 % 8 == 0, "whole n8 tiles per warp", bucket, warp);
      expect((warp / row_bands + 1) * s1 <= t.block_n && (warp / key_bands + 1) * s2 <= bucket &&
                 (warp / row_bands + 1) * s3 <= bucket,
             "columns within the product", bucket, warp);
    }
    expect(static_cast<int>(step1.size()) == t.warps && static_cast<int>(step2.size()) == t.warps &&
               static_cast<int>(step3.size()) == t.warps,
           "distinct warp blocks", bucket);
    expect(t.warps % row_bands == 0 && t.warps % key_bands == 0, "warps fill whole bands", bucket);
    expect(backward_key_splits(bucket) * (t.block_n / backward_key_splits(bucket)) == t.block_n &&
               backward_dkv_splits(bucket) * (bucket / backward_dkv_splits(bucket)) == bucket &&
               backward_dq_splits(bucket) * (bucket / backward_dq_splits(bucket)) == bucket,
           "splits divide the products", bucket);
    // The score tiles of step 1 fit the 32 dropout bits of backward_tiles.cuh.
    expect(t.block_n / backward_key_splits(bucket) / 8 <= 8, "at most 8 score tiles per warp", bucket);
    expect(backward_shared_bytes(bucket) <= kBackwardMaxSharedBytes, "main kernel shared memory", bucket);
    expect(backward_dq_shared_bytes(bucket) <= kBackwardMaxSharedBytes, "dQ kernel shared memory", bucket);
    const BackwardSharedLayout l = backward_shared_layout(bucket);
    expect(l.k_tile % 16 == 0 && l.v_tile % 16 == 0 && l.q_slots % 16 == 0 && l.do_slots % 16 == 0 &&
               l.p_tile % 16 == 0 && l.ds_tile % 16 == 0 && l.lse_slots % 16 == 0,
           "16-byte aligned regions", bucket);
    std::printf("bucket %3d: %d warps, block_n %d, block_m %2d, stages %d, dK+dV %3d floats/thread, "
                "shared %.1f KB (dQ kernel: block_n %d, stages %d, %.1f KB)\n",
                bucket, t.warps, t.block_n, t.block_m, t.stages, 2 * 16 * bucket / backward_dkv_splits(bucket) / 32,
                backward_shared_bytes(bucket) / 1024.0, backward_dq_tile(bucket).block_n,
                backward_dq_tile(bucket).stages, backward_dq_shared_bytes(bucket) / 1024.0);
  }
}

}  // namespace

int main() {
  check_trans_a_addressing();
  check_tiles();
  std::printf(failures == 0 ? "backward fragment and tile checks passed\n" : "%d backward check(s) FAILED\n",
              failures);
  return failures == 0 ? 0 : 1;
}
