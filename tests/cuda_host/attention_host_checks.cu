// CPU checks of the pure index math of the CUDA attention kernels (no GPU needed):
//  - the mma.m16n8k16 / ldmatrix fragment tables of fragment_layout.h cover their matrices, and
//    the ldmatrix addresses the forward hands out deliver exactly the elements mma expects
//    (emulating ldmatrix from the PTX description on a matrix of distinct values);
//  - the accumulator-to-A-operand reuse of P;
//  - the split-KV planning, the tile table, the key-visibility tile logic and the dropout pair
//    decision against brute force.
// Built and run by tests/cuda_host/test_attention_host_checks.py: with nvcc as host code (the
// __host__ __device__ helpers), and with g++ -Wall -Wextra -Werror for the plain-C++ headers.
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "cuda/attention/forward_config.h"
#include "cuda/attention/fragment_layout.h"
#include "cuda/attention/splitkv_plan.h"
#if defined(__CUDACC__)
#include "cuda/attention/attention_masking.cuh"
#endif

using namespace bigkern::cuda_attention;

static int failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      if (++failures <= 20) {                              \
        std::printf("FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                          \
        std::printf("\n");                                 \
      }                                                    \
    }                                                      \
  } while (0)

// A distinct value per matrix element, so a delivered value names its (row, col).
static int value_at(int row, int col) { return row * 1000 + col; }

// ldmatrix.x4 emulated from the PTX description: register m of `lane` holds, in half `half`,
// element ldmatrix_element(lane, half, trans) of matrix m, whose row rho was addressed by lane
// 8m + rho. `address(lane)` gives that lane's (row, first col) in the source matrix.
template <typename Address>
static int ldmatrix_x4_value(int lane, int reg, int half, bool trans, Address address) {
  const RowCol in_matrix = ldmatrix_element(lane, half, trans);
  const RowCol row_start = address(8 * reg + in_matrix.row);
  return value_at(row_start.row, row_start.col + in_matrix.col);
}

static void check_tables_cover_matrices() {
  std::set<std::pair<int, int>> a, b, c;
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      const RowCol e = mma_a_element(lane, i);
      CHECK(e.row >= 0 && e.row < 16 && e.col >= 0 && e.col < 16, "A lane %d i %d", lane, i);
      a.insert({e.row, e.col});
    }
    for (int i = 0; i < 4; ++i) {
      const RowCol eb = mma_b_element(lane, i);
      CHECK(eb.row >= 0 && eb.row < 16 && eb.col >= 0 && eb.col < 8, "B lane %d i %d", lane, i);
      b.insert({eb.row, eb.col});
      const RowCol ec = mma_c_element(lane, i);
      CHECK(ec.row >= 0 && ec.row < 16 && ec.col >= 0 && ec.col < 8, "C lane %d i %d", lane, i);
      c.insert({ec.row, ec.col});
    }
  }
  CHECK(a.size() == 256, "A covers %zu of 256", a.size());
  CHECK(b.size() == 128, "B covers %zu of 128", b.size());
  CHECK(c.size() == 128, "C covers %zu of 128", c.size());
  // Spot values transcribed from the PTX figures: lane 0 holds A (0,0),(0,1),(8,0),(8,1),(0,8),..;
  // lane 5 (group 1, quad 1) holds C (1,2),(1,3),(9,2),(9,3) and B (2,1),(3,1),(10,1),(11,1).
  CHECK(mma_a_element(0, 2).row == 8 && mma_a_element(0, 2).col == 0, "A lane 0 a2");
  CHECK(mma_a_element(0, 4).row == 0 && mma_a_element(0, 4).col == 8, "A lane 0 a4");
  CHECK(mma_a_element(31, 7).row == 15 && mma_a_element(31, 7).col == 15, "A lane 31 a7");
  CHECK(mma_c_element(5, 3).row == 9 && mma_c_element(5, 3).col == 3, "C lane 5 c3");
  CHECK(mma_b_element(5, 2).row == 10 && mma_b_element(5, 2).col == 1, "B lane 5 b2");
}

// Q K^T: A from the Q tile (rows = queries, cols = head dim), B from the K tile (rows = keys).
// P V: B from the V tile (rows = keys, cols = head dim) through ldmatrix .trans.
static void check_ldmatrix_addresses_feed_mma() {
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg) {
      for (int half = 0; half < 2; ++half) {
        // A: register reg holds A elements 2 reg, 2 reg + 1.
        const RowCol want_a = mma_a_element(lane, 2 * reg + half);
        CHECK(ldmatrix_x4_value(lane, reg, half, false, ldsm_a_address) == value_at(want_a.row, want_a.col),
              "Q operand lane %d reg %d half %d", lane, reg, half);
        // B of n tile reg / 2, register reg % 2: B[k][n] = K[8 tile + n][k].
        const int tile = reg / 2;
        const RowCol want_b = mma_b_element(lane, 2 * (reg % 2) + half);
        CHECK(ldmatrix_x4_value(lane, reg, half, false, ldsm_b_address) == value_at(8 * tile + want_b.col, want_b.row),
              "K operand lane %d reg %d half %d", lane, reg, half);
        // B of n tile reg / 2 from V: B[k][n] = V[k][8 tile + n].
        CHECK(ldmatrix_x4_value(lane, reg, half, true, ldsm_b_trans_address) ==
                  value_at(want_b.row, 8 * tile + want_b.col),
              "V operand lane %d reg %d half %d", lane, reg, half);
      }
    }
  }
}

// The accumulators of n8 tiles 0 and 1 hold exactly the A operand of the k16 step over them.
static void check_accumulator_reuse() {
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      const RowCol a = mma_a_element(lane, i);
      const AccumulatorSource source = accumulator_to_a_source(i);
      const RowCol c = mma_c_element(lane, source.c);
      CHECK(a.row == c.row && a.col == c.col + 8 * source.tile, "P lane %d element %d", lane, i);
    }
  }
}

static void check_tile_table() {
  const size_t expected_kb[] = {40, 45, 52, 68, 63, 75, 87, 99};  // forward_config.h's table
  int index = 0;
  for (int bucket : kHeadDimBuckets) {
    const ForwardTile tile = forward_tile(bucket);
    CHECK(forward_shared_bytes(bucket) / 1024 == expected_kb[index], "bucket %d: %zu bytes", bucket,
          forward_shared_bytes(bucket));
    CHECK(forward_shared_bytes(bucket) <= 101376, "bucket %d exceeds sm_86's 99 KB", bucket);
    CHECK(tile.block_n % 16 == 0 && tile.stages >= 2, "bucket %d tile", bucket);
    // ldmatrix reads 8 rows of 16 bytes per phase; conflict-free iff they occupy the 8 distinct
    // 16-byte bank groups of a 128-byte window.
    const int pitch_bytes = shared_row_elements(bucket) * 2;
    CHECK(pitch_bytes % 16 == 0, "bucket %d: rows must stay 16-byte aligned", bucket);
    for (int chunk = 0; chunk < bucket / 8; ++chunk) {
      std::set<int> groups;
      for (int row = 0; row < 8; ++row) groups.insert((row * pitch_bytes + chunk * 16) / 16 % 8);
      CHECK(groups.size() == 8, "bucket %d chunk %d: ldmatrix rows share bank groups", bucket, chunk);
    }
    ++index;
  }
  CHECK(head_dim_bucket(8) == 32 && head_dim_bucket(32) == 32 && head_dim_bucket(40) == 64, "buckets");
  CHECK(head_dim_bucket(256) == 256 && head_dim_bucket(264) == 0, "bucket limits");
}

static void check_split_plan() {
  const int block_ns[] = {32, 64};
  const int sms[] = {108, 132};
  for (int block_n : block_ns) {
    for (int num_sms : sms) {
      for (long long ctas = 1; ctas <= 300; ctas += (ctas < 40 ? 1 : 37)) {
        for (long long len_k = 1; len_k <= 70000; len_k = len_k * 3 + 7) {
          const SplitPlan plan = plan_splits(ctas, len_k, block_n, num_sms);
          const long long key_tiles = (len_k + block_n - 1) / block_n;
          CHECK(plan.num_splits >= 1 && plan.num_splits <= kMaxSplits, "splits %d", plan.num_splits);
          CHECK(plan.keys_per_split % block_n == 0, "keys_per_split %d", plan.keys_per_split);
          CHECK(static_cast<long long>(plan.num_splits) * plan.keys_per_split >= len_k, "chunks cover the keys");
          CHECK(static_cast<long long>(plan.num_splits - 1) * plan.keys_per_split < len_k,
                "no empty chunk: ctas %lld len_k %lld splits %d per %d", ctas, len_k, plan.num_splits,
                plan.keys_per_split);
          if (ctas >= num_sms) CHECK(plan.num_splits == 1, "a full wave is not split");
          if (plan.num_splits > 1) {
            CHECK(plan.keys_per_split / block_n >= kMinKeyTilesPerSplit, "chunk too short");
            CHECK(ctas * plan.num_splits <= num_sms + ctas, "grid bounded: ctas %lld splits %d", ctas, plan.num_splits);
          }
          CHECK(key_tiles < 2 * kMinKeyTilesPerSplit ? plan.num_splits == 1 : true, "short keys unsplit");
        }
      }
    }
  }
  // Decoding one token, 32 heads, 4096 keys, d = 128 (block_n 32) on 132 SMs: 5 chunks of 832 keys.
  const SplitPlan decode = plan_splits(32, 4096, 32, 132);
  CHECK(decode.num_splits == 5 && decode.keys_per_split == 832, "decode plan %d x %d", decode.num_splits,
        decode.keys_per_split);
}

#if defined(__CUDACC__)
static void check_visibility() {
  for (int causal = 0; causal <= 2; ++causal) {
    for (int len_q = 1; len_q <= 9; ++len_q) {
      for (int len_k = 1; len_k <= 9; ++len_k) {
        const int shift = causal == kCausalBottomRight ? len_k - len_q : 0;
        const KeyVisibility v{len_k, causal, shift};
        auto brute = [&](int row, int col) {
          if (col >= len_k) return false;
          if (causal == 1) return col <= row;
          if (causal == 2) return col <= row + len_k - len_q;
          return true;
        };
        for (int last_row = 0; last_row < len_q; ++last_row) {
          int end = 0;
          for (int row = 0; row <= last_row; ++row)
            for (int col = 0; col < len_k + 3; ++col)
              if (brute(row, col)) end = end > col + 1 ? end : col + 1;
          CHECK(v.key_end(last_row) == end, "key_end causal %d lq %d lk %d row %d: %d vs %d", causal, len_q, len_k,
                last_row, v.key_end(last_row), end);
        }
        for (int first_row = 0; first_row < len_q; ++first_row) {
          for (int col_end = 1; col_end <= len_k + 3; ++col_end) {
            bool all = true;
            for (int row = first_row; row < len_q + 3; ++row)
              for (int col = 0; col < col_end; ++col) all = all && brute(row, col);
            CHECK(v.all_visible(first_row, col_end) == all, "all_visible causal %d lq %d lk %d", causal, len_q, len_k);
          }
        }
        for (int col = 0; col < len_k; ++col) {
          long long first = len_q + 100;
          for (int row = len_q + 20; row >= 0; --row)
            if (brute(row, col)) first = row;
          CHECK(v.first_row(col) == first, "first_row causal %d col %d", causal, col);
        }
      }
    }
  }
}

static void check_dropout_pairs() {
  DropoutGenerator gen{bigkern::dropout_threshold(0.3), 0x12345678u, 0x9abcdef0u, 7u, 11u};
  int dropped = 0, total = 0;
  for (int row = 0; row < 40; ++row) {
    for (int col = 0; col < 64; col += 2) {
      bool first, second;
      gen.keep_pair(row, col, first, second);
      CHECK(first == gen.keep(row, col) && second == gen.keep(row, col + 1), "pair row %d col %d", row, col);
      dropped += !first + !second;
      total += 2;
    }
  }
  CHECK(dropped > total / 5 && dropped < total * 2 / 5, "drop rate %d / %d for p = 0.3", dropped, total);
}
#endif

int main() {
  check_tables_cover_matrices();
  check_ldmatrix_addresses_feed_mma();
  check_accumulator_reuse();
  check_tile_table();
  check_split_plan();
#if defined(__CUDACC__)
  check_visibility();
  check_dropout_pairs();
#endif
  if (failures != 0) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all attention host checks passed\n");
  return 0;
}
