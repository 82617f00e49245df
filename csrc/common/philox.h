// The dropout generator of the attention kernels: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC'11), counter-based, so any element's random number is a pure
// function of (seed, position) and forward, backward and every backend agree bit for bit.
//
// For attention weight (row i, key j) of query head h in batch b (Hq heads):
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (j >> 2, i, b * Hq + h, offset)
//   r       = philox(counter, key)[j & 3]          (one call serves four consecutive keys)
//   dropped = r < threshold,  threshold = min(floor(dropout_p * 2^32), 2^32 - 1)
// bigkern/reference/philox.py and the Triton kernels implement the very same function.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define BIGKERN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define BIGKERN_HOST_DEVICE inline
#endif

namespace bigkern {

struct Philox4 {
  uint32_t x[4];
};

BIGKERN_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

BIGKERN_HOST_DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The drop threshold for a dropout probability; computed once on the host.
inline uint32_t dropout_threshold(double dropout_p) {
  const double scaled = std::floor(dropout_p * 4294967296.0);
  return scaled >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(scaled < 0 ? 0 : scaled);
}

}  // namespace bigkern
