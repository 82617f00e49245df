// Tile shapes of the CUDA attention backward, per head-dim bucket. Plain constexpr C++: the
// kernels (nvcc), the host launcher and the CPU checks read the same table.
//
// Main kernel (backward_kernel.cuh): one CTA per (block_n keys, kv head, batch) keeps dK and dV of
// its keys in fp32 registers for its whole life and streams block_m query rows at a time (all
// query heads of the GQA group, all query tiles at or below the causal diagonal). Per step it
// computes three products with different warp arrangements, joined through shared memory:
//   1. S = Q K^T and dP = dO V^T (block_m x block_n): a warp owns 16 query rows and
//      block_n / key_splits keys; P (dropped, rescaled) and dS go to shared memory.
//   2. dV += P^T dO and dK += dS^T Q (block_n x D): a warp owns 16 keys and D / dkv_splits
//      columns; those accumulators (D / dkv_splits floats per thread) persist across steps.
//   3. dQ += dS K (block_m x D, only with atomics): a warp owns 16 query rows and D / dq_splits
//      columns, added atomically into a float32 accumulator.
//
// The register budget decides the shapes: dK and dV cost D / dkv_splits floats per thread for the
// whole kernel, S and dP cost block_n / key_splits floats more during step 1. Shared
// memory is kept at or below 99 KB (the per-block limit of sm_86/sm_89, which run the sm_80 code)
// and, for D <= 128, at or below 80 KB so two CTAs (8 warps) share an A100 SM:
//
//   bucket warps block_n block_m stages  dK+dV   S+dP   shared memory
//   32     4     64      64      2       32      64     49.0 KB
//   64     4     64      64      2       64      64     73.0 KB
//   96     4     64      32      2       96      32     61.5 KB
//   128    4     64      32      2      128      32     77.5 KB
//   160    8     64      32      2       80      16     93.5 KB
//   192    8     64      32      1       96      16     84.2 KB
//   224    8     64      32      1      112      16     96.2 KB
//   256    8     64      16      1      128       8     87.1 KB
//
// Up to D = 128 four warps of 16 keys hold all D columns of dK and dV (at most 128 floats per
// thread). Beyond, 128 floats would not leave room for the rest, so eight warps split the columns
// in two. Double buffering of the Q/dO tile (stages = 2: the next tile is loaded while this one is
// computed) fits up to D = 160; above, a single buffer keeps the CTA within 99 KB, and D = 256
// also halves block_m. Every shared-memory row is padded by 8 elements (16 bytes) so that the 8
// rows one ldmatrix phase reads fall into distinct bank groups.
//
// Deterministic dQ kernel (backward_dq_kernel.cuh): one CTA per (64 query rows, head, batch), four
// warps of 16 rows, streaming K/V tiles of block_n keys through `stages` buffers; dQ stays in
// registers (D / 2 floats per thread), S and dP cost block_n floats:
//
//   bucket  block_n  stages  shared memory
//   32      64       2       30.0 KB
//   64      64       2       54.0 KB
//   96      64       2       78.0 KB
//   128     32       2       68.0 KB
//   160     32       2       84.0 KB
//   192     32       1       75.0 KB
//   224     32       1       87.0 KB
//   256     32       1       99.0 KB
#pragma once
#include <cstddef>

namespace bigkern::cuda_attention {

struct BackwardTile {
  int warps;
  int block_n;  // keys per CTA
  int block_m;  // query rows per step
  int stages;   // Q/dO tiles held in shared memory
};

constexpr BackwardTile backward_tile(int bucket) {
  return bucket <= 64    ? BackwardTile{4, 64, 64, 2}
         : bucket <= 128 ? BackwardTile{4, 64, 32, 2}
         : bucket <= 160 ? BackwardTile{8, 64, 32, 2}
         : bucket <= 224 ? BackwardTile{8, 64, 32, 1}
                         : BackwardTile{8, 64, 16, 1};
}

constexpr int backward_threads(int bucket) { return backward_tile(bucket).warps * 32; }

// Warps per 16-row band of each product (see the header comment).
constexpr int backward_key_splits(int bucket) {
  return backward_tile(bucket).warps / (backward_tile(bucket).block_m / 16);
}
constexpr int backward_dkv_splits(int bucket) {
  return backward_tile(bucket).warps / (backward_tile(bucket).block_n / 16);
}
constexpr int backward_dq_splits(int bucket) { return backward_key_splits(bucket); }

// Elements per shared-memory row: Q, dO, K, V tiles (head dim) and P, dS tiles (keys).
constexpr int backward_row_elements(int bucket) { return bucket + 8; }
constexpr int backward_score_row_elements(int bucket) { return backward_tile(bucket).block_n + 8; }

// Byte offsets of the main kernel's shared-memory regions, in this order.
struct BackwardSharedLayout {
  size_t k_tile, v_tile, q_slots, do_slots, p_tile, ds_tile, lse_slots, delta_slots, total;
};

constexpr BackwardSharedLayout backward_shared_layout(int bucket) {
  const BackwardTile t = backward_tile(bucket);
  const size_t kv_tile = static_cast<size_t>(t.block_n) * backward_row_elements(bucket) * 2;
  const size_t q_slots = static_cast<size_t>(t.stages) * t.block_m * backward_row_elements(bucket) * 2;
  const size_t score_tile = static_cast<size_t>(t.block_m) * backward_score_row_elements(bucket) * 2;
  const size_t stats = static_cast<size_t>(t.stages) * t.block_m * sizeof(float);
  BackwardSharedLayout l{};
  l.k_tile = 0;
  l.v_tile = l.k_tile + kv_tile;
  l.q_slots = l.v_tile + kv_tile;
  l.do_slots = l.q_slots + q_slots;
  l.p_tile = l.do_slots + q_slots;
  l.ds_tile = l.p_tile + score_tile;
  l.lse_slots = l.ds_tile + score_tile;
  l.delta_slots = l.lse_slots + stats;
  l.total = l.delta_slots + stats;
  return l;
}

constexpr size_t backward_shared_bytes(int bucket) { return backward_shared_layout(bucket).total; }

// ---- Deterministic dQ kernel ----

constexpr int kBackwardDqWarps = 4;
constexpr int kBackwardDqThreads = kBackwardDqWarps * 32;
constexpr int kBackwardDqBlockM = 16 * kBackwardDqWarps;

struct BackwardDqTile {
  int block_n;
  int stages;  // K/V tiles held in shared memory
};

constexpr BackwardDqTile backward_dq_tile(int bucket) {
  return bucket <= 96 ? BackwardDqTile{64, 2} : bucket <= 160 ? BackwardDqTile{32, 2} : BackwardDqTile{32, 1};
}

constexpr size_t backward_dq_shared_bytes(int bucket) {
  const BackwardDqTile t = backward_dq_tile(bucket);
  return (2 * static_cast<size_t>(kBackwardDqBlockM) + 2 * static_cast<size_t>(t.stages) * t.block_n) *
         backward_row_elements(bucket) * 2;
}

// The largest dynamic shared memory a block may opt into on sm_86/sm_89 (the smallest limit of
// the GPUs that run this code); every configuration above stays within it.
constexpr size_t kBackwardMaxSharedBytes = 99 * 1024;

}  // namespace bigkern::cuda_attention
