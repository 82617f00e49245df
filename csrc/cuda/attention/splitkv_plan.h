// How many chunks of the keys the forward splits into when too few query tiles exist to fill
// the GPU (decoding: Lq of 1..a few rows, small batch x heads). Each chunk runs as its own CTA
// and writes a partial output and log-sum-exp; a combine kernel merges them. Plain C++ so the
// CPU checks can exercise it; the host calls it with the SM count of the current device (a
// cached property: no device synchronisation).
#pragma once
#include <algorithm>
#include <cstdint>

namespace bigkern::cuda_attention {

struct SplitPlan {
  int32_t num_splits;      // 1: no split (the plain forward)
  int32_t keys_per_split;  // a multiple of block_n; the last chunk may be shorter
};

// A chunk of fewer key tiles than this would spend more on its partial-result round trip
// (a float32 row of the output per chunk, plus the combine) than it gains in parallelism.
constexpr int64_t kMinKeyTilesPerSplit = 4;
// Bounds the combine's loop over chunks and the workspace.
constexpr int64_t kMaxSplits = 128;

// ctas: CTAs of the unsplit forward (batch * heads * query tiles); len_k: keys; block_n: keys
// per tile; num_sms: streaming multiprocessors of the device.
//
// Split only when the unsplit grid is less than one wave (ctas < num_sms): then chunks are
// added until the grid covers every SM about once (ctas * splits <= num_sms + ctas, which also
// bounds the float32 workspace to about 2 * num_sms query tiles), as long as each chunk keeps
// kMinKeyTilesPerSplit key tiles. Chunks are then evened out so none is empty.
inline SplitPlan plan_splits(int64_t ctas, int64_t len_k, int32_t block_n, int32_t num_sms) {
  const int64_t key_tiles = (len_k + block_n - 1) / block_n;
  const SplitPlan unsplit{1, static_cast<int32_t>(std::max<int64_t>(key_tiles, 1) * block_n)};
  if (ctas <= 0 || ctas >= num_sms || key_tiles < 2 * kMinKeyTilesPerSplit) return unsplit;
  const int64_t wanted = (num_sms + ctas - 1) / ctas;
  const int64_t splits = std::min({wanted, key_tiles / kMinKeyTilesPerSplit, kMaxSplits});
  if (splits <= 1) return unsplit;
  const int64_t tiles_per_split = (key_tiles + splits - 1) / splits;
  const int64_t even_splits = (key_tiles + tiles_per_split - 1) / tiles_per_split;
  return {static_cast<int32_t>(even_splits), static_cast<int32_t>(tiles_per_split * block_n)};
}

}  // namespace bigkern::cuda_attention
