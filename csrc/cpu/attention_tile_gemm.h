// The tile products of the CPU attention kernels: C (+)= A * B on tiles already in cache, with a
// register-blocked micro-kernel, and the packing that brings operands into its layout.
//
//   C[m][n] (+)= sum_k A(m, k) * B[k][n],   A(m, k) = a[m * a_rs + k * a_ks]
//
// A is read one element at a time (broadcast to a vector), through two strides, so the same
// kernel multiplies by A or by its transpose (P V, P^T dO, dS^T Q, dS K); B and C are row-major
// with n contiguous, read and written kNR = 2 vectors at a time, so N must be a multiple of kNR
// (operands are padded with zero columns to make it so). Each C element is one chain of
// multiply-adds over k in increasing order, continued from C's previous value, whatever the
// blocking: results do not depend on how a product is cut into tiles, which is what makes the
// backward's two dQ schemes agree bit for bit.
//
// Register tile kMR x kNR: 6 rows of 2 vectors = 12 accumulators, plus 2 B vectors and one
// broadcast = 15 of the 16 vector registers of AVX2 / SSE; per k, 8 loads feed 12 FMAs.
//
// Included by attention_kernels.h inside `namespace bigkern::cpu::<isa>`, after attention_simd.h.

template <typename acc>
inline constexpr int64_t kNR = 2 * Simd<acc>::kLanes;
inline constexpr int64_t kMR = 6;

template <typename acc, int kRows, bool kAccumulate>
BIGKERN_ATTN_INLINE void micro_kernel(int64_t K, const acc* __restrict__ a, int64_t a_rs, int64_t a_ks,
                                      const acc* __restrict__ b, int64_t ldb, acc* __restrict__ c, int64_t ldc) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  V c0[kRows], c1[kRows];
  const acc* a_row[kRows];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    a_row[r] = a + r * a_rs;
    if constexpr (kAccumulate) {
      c0[r] = vload(c + r * ldc);
      c1[r] = vload(c + r * ldc + L);
    } else {
      c0[r] = V{};
      c1[r] = V{};
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const V b0 = vload(b + k * ldb), b1 = vload(b + k * ldb + L);
    const int64_t ak = k * a_ks;
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const V ar = vsplat(a_row[r][ak]);
      c0[r] = fmadd(ar, b0, c0[r]);
      c1[r] = fmadd(ar, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    vstore(c + r * ldc, c0[r]);
    vstore(c + r * ldc + L, c1[r]);
  }
}

// C (M x N) (+)= A (M x K) * B (K x N); N % kNR == 0. Not inlined: one copy of the product serves
// every caller, so the same inputs give the same bits in the forward and both backward passes.
// Column panels outside, row blocks inside: a K x kNR panel of B (4 KiB at K = 64) stays in L1
// while all of A's rows stream past it.
template <typename acc, bool kAccumulate>
__attribute__((noinline)) void tile_gemm(int64_t M, int64_t N, int64_t K, const acc* a, int64_t a_rs,
                                         int64_t a_ks, const acc* b, int64_t ldb, acc* c, int64_t ldc) {
  constexpr int64_t NR = kNR<acc>;
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    int64_t m0 = 0;
    for (; m0 + kMR <= M; m0 += kMR)
      micro_kernel<acc, kMR, kAccumulate>(K, a + m0 * a_rs, a_rs, a_ks, b + n0, ldb, c + m0 * ldc + n0, ldc);
    const acc* a_tail = a + m0 * a_rs;
    acc* c_tail = c + m0 * ldc + n0;
    switch (M - m0) {
      case 5: micro_kernel<acc, 5, kAccumulate>(K, a_tail, a_rs, a_ks, b + n0, ldb, c_tail, ldc); break;
      case 4: micro_kernel<acc, 4, kAccumulate>(K, a_tail, a_rs, a_ks, b + n0, ldb, c_tail, ldc); break;
      case 3: micro_kernel<acc, 3, kAccumulate>(K, a_tail, a_rs, a_ks, b + n0, ldb, c_tail, ldc); break;
      case 2: micro_kernel<acc, 2, kAccumulate>(K, a_tail, a_rs, a_ks, b + n0, ldb, c_tail, ldc); break;
      case 1: micro_kernel<acc, 1, kAccumulate>(K, a_tail, a_rs, a_ks, b + n0, ldb, c_tail, ldc); break;
      default: break;
    }
  }
}

// dst[r][e] = src row r, element e, converted to acc, for r < rows, e < n; zero for
// n <= e < ld (the padding kNR-wide reads need).
template <typename scalar_t, typename acc>
void pack_rows(const scalar_t* src, int64_t src_stride, int64_t rows, int64_t n, acc* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* __restrict__ s = src + r * src_stride;
    acc* __restrict__ d = dst + r * ld;
    for (int64_t e = 0; e < n; ++e) d[e] = static_cast<acc>(s[e]);
    for (int64_t e = n; e < ld; ++e) d[e] = acc(0);
  }
}

// dst[e][r] = src row r, element e, for r < rows, e < n; zero for rows <= r < ld.
// Blocks of 8 source rows keep the strided writes within a few cache lines at a time.
template <typename scalar_t, typename acc>
void pack_rows_transposed(const scalar_t* src, int64_t src_stride, int64_t rows, int64_t n, acc* dst,
                          int64_t ld) {
  constexpr int64_t kBlock = 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t e = 0; e < n; ++e) {
      acc* __restrict__ d = dst + e * ld;
      for (int64_t r = r0; r < r1; ++r) d[r] = static_cast<acc>(src[r * src_stride + e]);
    }
  }
  for (int64_t e = 0; e < n; ++e)
    for (int64_t r = rows; r < ld; ++r) dst[e * ld + r] = acc(0);
}

// The rows of a (B, H, L, E) operand as an acc matrix with row stride ld: read in place when it
// already is one (same type and, where it serves as B, a width that is a multiple of kNR), else
// converted and padded into `scratch` (rows x padded_n).
template <typename scalar_t, typename acc>
const acc* rows_as_acc(const scalar_t* src, int64_t src_stride, int64_t rows, int64_t n, int64_t padded_n,
                       acc* scratch, int64_t& ld) {
  if constexpr (std::is_same_v<scalar_t, acc>) {
    if (n == padded_n) {
      ld = src_stride;
      return src;
    }
  }
  pack_rows(src, src_stride, rows, n, scratch, padded_n);
  ld = padded_n;
  return scratch;
}
