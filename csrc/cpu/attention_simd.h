// SIMD vectors for the CPU attention kernels: GCC/Clang vector extensions, lowered to the
// including file's target (BIGKERN_ATTN_VECTOR_BYTES wide: 16, 32 or 64; fused multiply-add where
// BIGKERN_ATTN_FMA is 1; BIGKERN_ATTN_AVX2 is 1 where AVX2 intrinsics may be used), and a
// vectorised exp2.
//
// Included by attention_kernels.h inside `namespace bigkern::cpu::<isa>`.

template <typename T>
struct Simd;

template <>
struct Simd<float> {
  typedef float type __attribute__((vector_size(BIGKERN_ATTN_VECTOR_BYTES)));
  typedef int32_t int_type __attribute__((vector_size(BIGKERN_ATTN_VECTOR_BYTES)));
  static constexpr int64_t kLanes = BIGKERN_ATTN_VECTOR_BYTES / sizeof(float);
};

template <>
struct Simd<double> {
  typedef double type __attribute__((vector_size(BIGKERN_ATTN_VECTOR_BYTES)));
  typedef int64_t int_type __attribute__((vector_size(BIGKERN_ATTN_VECTOR_BYTES)));
  static constexpr int64_t kLanes = BIGKERN_ATTN_VECTOR_BYTES / sizeof(double);
};

template <typename T>
using simd_t = typename Simd<T>::type;

#define BIGKERN_ATTN_INLINE __attribute__((always_inline)) inline

template <typename T>
BIGKERN_ATTN_INLINE simd_t<T> vload(const T* p) {
  simd_t<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
BIGKERN_ATTN_INLINE void vstore(T* p, simd_t<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// x - 0 is x for every x (0 + x is not: -0 + 0 = +0), so this folds to a single broadcast.
template <typename T>
BIGKERN_ATTN_INLINE simd_t<T> vsplat(T x) {
  return x - simd_t<T>{};
}

template <typename V>
BIGKERN_ATTN_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}

// a * b + c, fused (one rounding) where the target has FMA. Written out rather than left to the
// compiler's contraction so the tile products round identically wherever they are used.
BIGKERN_ATTN_INLINE simd_t<float> fmadd(simd_t<float> a, simd_t<float> b, simd_t<float> c) {
#if BIGKERN_ATTN_FMA && BIGKERN_ATTN_VECTOR_BYTES == 64
  return (simd_t<float>)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif BIGKERN_ATTN_FMA
  return (simd_t<float>)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

BIGKERN_ATTN_INLINE simd_t<double> fmadd(simd_t<double> a, simd_t<double> b, simd_t<double> c) {
#if BIGKERN_ATTN_FMA && BIGKERN_ATTN_VECTOR_BYTES == 64
  return (simd_t<double>)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif BIGKERN_ATTN_FMA
  return (simd_t<double>)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}

template <typename T>
BIGKERN_ATTN_INLINE T horizontal_sum(simd_t<T> v) {
  T total = 0;
  for (int64_t lane = 0; lane < Simd<T>::kLanes; ++lane) total += v[lane];
  return total;
}

// 2^x for float lanes with x <= 127, within 1 ulp: 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2,
// and 2^f from its degree-7 Taylor polynomial (truncation error < 6e-9, below half an ulp).
// Results below 2^-125 flush to zero, so -inf gives exactly 0 (as masked scores need); NaN
// propagates (through the min, the integer conversion's 0x80000000 << 23 = 0, and the final
// select). The softmax only exponentiates differences from a running max or the lse, <= 0.
BIGKERN_ATTN_INLINE simd_t<float> exp2_simd(simd_t<float> x) {
  using V = simd_t<float>;
  using I = Simd<float>::int_type;
  const V lo = vsplat(-125.0f), hi = vsplat(127.0f);
  const V xc = hi < x ? hi : x;               // one vminps, which keeps a NaN x
  const V round_magic = vsplat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V n = (xc + round_magic) - round_magic;
  const V f = xc - n;
  V poly = vsplat(1.525273380405984e-05f);
  poly = fmadd(poly, f, vsplat(1.5403530393381608e-04f));
  poly = fmadd(poly, f, vsplat(1.3333558146428443e-03f));
  poly = fmadd(poly, f, vsplat(9.618129107628477e-03f));
  poly = fmadd(poly, f, vsplat(5.550410866482158e-02f));
  poly = fmadd(poly, f, vsplat(0.2402265069591007f));
  poly = fmadd(poly, f, vsplat(0.6931471805599453f));
  poly = fmadd(poly, f, vsplat(1.0f));
  const I exponent = __builtin_convertvector(n, I) << 23;
  const V result = (V)((I)poly + exponent);
  return x < lo ? V{} : result;
}

// float64 is the gradcheck dtype: exactness over speed, the C library per lane.
BIGKERN_ATTN_INLINE simd_t<double> exp2_simd(simd_t<double> x) {
  simd_t<double> result{};  // every lane is set below; the braces keep -Wmaybe-uninitialized quiet
  for (int64_t lane = 0; lane < Simd<double>::kLanes; ++lane) result[lane] = std::exp2(x[lane]);
  return result;
}

// The logistic function per lane, through exp2_simd (the recurrent gates, the convolution's silu).
template <typename acc>
BIGKERN_ATTN_INLINE simd_t<acc> sigmoid_v(simd_t<acc> x) {
  const simd_t<acc> one = vsplat(acc(1));
  return one / (one + exp2_simd(x * vsplat(acc(-1.4426950408889634))));
}
