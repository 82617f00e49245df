// Tile shapes of the CUDA attention forward, per head-dim bucket. Plain constexpr C++: the
// kernels (nvcc) and the host planning (attention.cpp, and the CPU checks) read the same table.
//
// One CTA = 4 warps = 128 threads computes a tile of block_m query rows of one (batch, head)
// against the keys, streamed block_n at a time. Each warp owns 16 * m_tiles rows: its fp32
// registers hold the output rows (head_dim / 2 floats per 16 rows per thread) and the score tile
// (block_n / 2 floats per 16 rows).
//
// Why 32 rows per warp wherever registers allow: with 16 rows, every k16 step of Q K^T issues
// one ldmatrix.x4 of Q and block_n / 16 of K (512 bytes each, 4 cycles of an SM's 128 B/cycle
// shared-memory port) for only block_n / 8 mma (2 cycles each on A100, fewer on H100): shared
// memory, not the tensor cores, would be the bottleneck. A second 16-row tile per warp reuses
// every K/V fragment twice, which brings the two into balance (FlashAttention-2 uses 128-row
// tiles on 4 warps for the same reason). Up to d = 128 that fits (O: d floats, S: block_n floats
// per thread) below 255 registers without spills, with block_n = 32 from d = 64 on (block_n = 64
// spills at d = 64); above d = 128 only 16 rows fit, with the narrow key tile keeping the scores small
// next to O. (ptxas takes 165-255 registers in every bucket, so 2 CTAs per SM by registers;
// capping d = 32 at 168 registers for a third CTA spills.)
//
//   bucket   rows/warp  block_m  block_n  stages  shared memory (rows x (bucket + 8) x 2 B)
//   32       32         128      64       3       (128 + 3*2*64) * 80  B = 40 KB
//   64       32         128      32       3       (128 + 3*2*32) * 144 B = 45 KB
//   96       32         128      32       2       (128 + 2*2*32) * 208 B = 52 KB
//   128      32         128      32       2       (128 + 2*2*32) * 272 B = 68 KB
//   160      16          64      32       2       (64 + 2*2*32)  * 336 B = 63 KB
//   192      16          64      32       2       (64 + 2*2*32)  * 400 B = 75 KB
//   224      16          64      32       2       (64 + 2*2*32)  * 464 B = 87 KB
//   256      16          64      32       2       (64 + 2*2*32)  * 528 B = 99 KB
//
// Two CTAs (8 warps) fit per SM on A100 (164 KB shared, 64K registers) in every bucket up to
// 192, one at 224 and 256 (shared memory); H100 (227 KB) fits two everywhere. d <= 64 uses a
// third pipeline stage since its tiles are cheap. Every shared-memory row is padded by 8
// elements (16 bytes): the pitch is then an odd number of 16-byte units, so the 8 rows one
// ldmatrix phase reads fall in the 8 distinct 16-byte bank groups (a pitch that is a multiple of
// 128 bytes would conflict 8 ways). 99 KB at d = 256 is also exactly the per-block limit of
// sm_86/sm_89, which run the sm_80 code.
#pragma once
#include <cstddef>

namespace bigkern::cuda_attention {

constexpr int kForwardWarps = 4;
constexpr int kForwardThreads = kForwardWarps * 32;
constexpr int kHeadDimBuckets[] = {32, 64, 96, 128, 160, 192, 224, 256};
constexpr int kMaxHeadDim = 256;

struct ForwardTile {
  int m_tiles;  // 16-row mma tiles per warp
  int block_n;  // keys per tile
  int stages;   // K/V tiles in flight (cp.async pipeline depth)
};

constexpr ForwardTile forward_tile(int bucket) {
  if (bucket <= 32) return ForwardTile{2, 64, 3};
  if (bucket <= 128) return ForwardTile{2, 32, bucket <= 64 ? 3 : 2};
  return ForwardTile{1, 32, 2};
}

constexpr int forward_block_m(int bucket) { return forward_tile(bucket).m_tiles * 16 * kForwardWarps; }

// Elements per shared-memory row of a Q, K or V tile.
constexpr int shared_row_elements(int bucket) { return bucket + 8; }

constexpr size_t forward_shared_bytes(int bucket) {
  const ForwardTile tile = forward_tile(bucket);
  const size_t rows =
      static_cast<size_t>(forward_block_m(bucket)) + 2 * static_cast<size_t>(tile.stages) * tile.block_n;
  return rows * shared_row_elements(bucket) * 2;
}

// The smallest bucket holding head_dim, or 0 when head_dim exceeds kMaxHeadDim.
constexpr int head_dim_bucket(long long head_dim) {
  for (int bucket : kHeadDimBuckets) {
    if (head_dim <= bucket) return bucket;
  }
  return 0;
}

}  // namespace bigkern::cuda_attention
