// The dropout generator of csrc/common/philox.h, kPhiloxLanes counters at a time: lane l computes
// philox4x32_10(c0[l], c1[l], c2, c3) under one key, bit for bit the scalar function. The AVX2
// build (BIGKERN_ATTN_AVX2) multiplies with vpmuludq; elsewhere lanes run the scalar multiply.
//
// Included by attention_kernels.h inside `namespace bigkern::cpu::<isa>`, after attention_simd.h.

typedef uint32_t philox_lanes_t __attribute__((vector_size(BIGKERN_ATTN_VECTOR_BYTES)));
inline constexpr int64_t kPhiloxLanes = BIGKERN_ATTN_VECTOR_BYTES / sizeof(uint32_t);

struct PhiloxLanes {
  philox_lanes_t x[4];
};

// The high and low 32 bits of m * c in every lane.
BIGKERN_ATTN_INLINE void philox_mulhilo_lanes(uint32_t m, philox_lanes_t c, philox_lanes_t& hi, philox_lanes_t& lo) {
#if BIGKERN_ATTN_AVX2
  // vpmuludq multiplies the even 32-bit lanes into 64-bit products; the odd lanes go through a
  // 32-bit shift, and blends put the halves back in their lanes.
  const __m256i mv = _mm256_set1_epi32(static_cast<int>(m)), cv = (__m256i)c;
  const __m256i even = _mm256_mul_epu32(cv, mv);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(cv, 32), mv);
  lo = (philox_lanes_t)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = (philox_lanes_t)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
#else
  for (int64_t l = 0; l < kPhiloxLanes; ++l) {
    uint32_t h, w;
    philox_mulhilo(m, c[l], h, w);
    hi[l] = h;
    lo[l] = w;
  }
#endif
}

BIGKERN_ATTN_INLINE PhiloxLanes philox4x32_10_lanes(philox_lanes_t c0, philox_lanes_t c1, uint32_t c2_value,
                                                    uint32_t c3_value, uint32_t k0, uint32_t k1) {
  philox_lanes_t c2 = c2_value - philox_lanes_t{}, c3 = c3_value - philox_lanes_t{};
  for (int round = 0; round < 10; ++round) {
    philox_lanes_t hi0, lo0, hi1, lo1;
    philox_mulhilo_lanes(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo_lanes(0xCD9E8D57u, c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return PhiloxLanes{{c0, c1, c2, c3}};
}

BIGKERN_ATTN_INLINE philox_lanes_t philox_splat(int64_t value) {
  return static_cast<uint32_t>(value) - philox_lanes_t{};
}

// (start, start + 1, start + 2, ...)
BIGKERN_ATTN_INLINE philox_lanes_t philox_iota(int64_t start) {
  philox_lanes_t v;
  for (int64_t l = 0; l < kPhiloxLanes; ++l) v[l] = static_cast<uint32_t>(start + l);
  return v;
}
