// The element-wise half of the CPU attention kernels: scores to masked logits, the forward's
// online softmax, the backward's recomputed probabilities and score gradients, and dropout.
//
// Logits stay in natural-log units (x = scale * q.k + mask; -inf where a key is hidden) and are
// exponentiated as exp2((x - m) * log2(e)), so the same lse convention holds everywhere (the
// forward without a mask keeps q.k units and folds the scale into that factor).
// The scaling and the mask are applied in separate passes over the tile, so no compiler
// contraction into fused multiply-adds can make one call round differently from another.
//
// Included by attention_kernels.h inside `namespace bigkern::cpu::<isa>`, after attention_simd.h
// and attention_philox_simd.h.

inline constexpr double kLog2e = 1.4426950408889634;

// Which query sees which key; the same rule as bigkern/reference/attention.py's visible_keys.
struct Visibility {
  int64_t causal;  // 0 none, 1 top-left, 2 bottom-right
  int64_t shift;   // key j is visible to query i iff j <= i + shift (when causal)
  int64_t len_k;

  Visibility(const AttentionProblem& p)
      : causal(p.causal), shift(p.causal == 2 ? p.len_k - p.len_q : 0), len_k(p.len_k) {}
  // How many of the keys [j0, j0 + n) query i sees (they are a prefix).
  int64_t visible_prefix(int64_t i, int64_t j0, int64_t n) const {
    return causal == 0 ? n : std::clamp<int64_t>(i + shift + 1 - j0, 0, n);
  }
  // One past the last key any of the queries [i0, i0 + n) sees.
  int64_t key_end(int64_t i0, int64_t n) const {
    return causal == 0 ? len_k : std::clamp<int64_t>(i0 + n + shift, 0, len_k);
  }
  // The first query that sees key j0 (len_q or more: none does).
  int64_t first_query(int64_t j0) const { return causal == 0 ? 0 : std::max<int64_t>(0, j0 - shift); }
};

// The dropout generator of csrc/common/philox.h, bound to one call's seed and offset.
struct DropoutGenerator {
  bool active;
  uint32_t threshold, key0, key1, offset;

  DropoutGenerator(const AttentionProblem& p)
      : active(p.dropout_p > 0.0),
        threshold(dropout_threshold(p.dropout_p)),
        key0(static_cast<uint32_t>(static_cast<uint64_t>(p.seed))),
        key1(static_cast<uint32_t>(static_cast<uint64_t>(p.seed) >> 32)),
        offset(static_cast<uint32_t>(p.offset)) {}
  // The random words of keys 4 * group .. 4 * group + 3 of query i of (batch, head) bh.
  Philox4 words(int64_t group, int64_t i, int64_t bh) const {
    return philox4x32_10(static_cast<uint32_t>(group), static_cast<uint32_t>(i), static_cast<uint32_t>(bh), offset,
                         key0, key1);
  }
  // The words of kPhiloxLanes groups or queries at once (lane l: counter (group[l], i[l], bh, offset)).
  PhiloxLanes words(philox_lanes_t group, philox_lanes_t i, int64_t bh) const {
    return philox4x32_10_lanes(group, i, static_cast<uint32_t>(bh), offset, key0, key1);
  }
  // keep[c] = `kept` or 0 for keys j0 + c, c < n, of query i (j0 % 4 == 0).
  template <typename acc>
  void keep_line(int64_t i, int64_t bh, int64_t j0, int64_t n, acc kept, acc* keep) const {
    constexpr int64_t kKeys = 4 * kPhiloxLanes;
    int64_t c = 0;
    for (; c + kKeys <= n; c += kKeys) {
      const PhiloxLanes r = words(philox_iota((j0 + c) >> 2), philox_splat(i), bh);
      for (int64_t l = 0; l < kPhiloxLanes; ++l)
        for (int64_t w = 0; w < 4; ++w) keep[c + 4 * l + w] = r.x[w][l] >= threshold ? kept : acc(0);
    }
    for (; c < n; c += 4) {
      const Philox4 r = words((j0 + c) >> 2, i, bh);
      for (int64_t w = 0; w < 4 && c + w < n; ++w) keep[c + w] = r.x[w] >= threshold ? kept : acc(0);
    }
  }
  // Zeroes the dropped weights of a transposed tile: s[j * ld + c] for key j0 + j (j < nk, j0 % 4
  // == 0) and query i0 + c (c < nq; ld >= nq rounded up to kPhiloxLanes).
  template <typename acc>
  void drop_columns(int64_t bh, int64_t i0, int64_t nq, int64_t j0, int64_t nk, acc* s, int64_t ld) const {
    for (int64_t c = 0; c < nq; c += kPhiloxLanes) {
      const philox_lanes_t queries = philox_iota(i0 + c);
      for (int64_t j = 0; j < nk; j += 4) {
        const PhiloxLanes r = words(philox_splat((j0 + j) >> 2), queries, bh);
        for (int64_t w = 0; w < 4 && j + w < nk; ++w) {
          acc* row = s + (j + w) * ld + c;
          for (int64_t l = 0; l < kPhiloxLanes; ++l) row[l] = r.x[w][l] < threshold ? acc(0) : row[l];
        }
      }
    }
  }
};

// One line of the mask applied to logits: at(c) op= mask[offset + c * stride] for c < n (bool:
// hide the key where false; float: add). `at` addresses the logits.
template <typename scalar_t, typename acc, typename At>
BIGKERN_ATTN_INLINE void apply_mask_line(const MaskView& mask, int64_t offset, int64_t stride, int64_t n, At at) {
  constexpr acc kHidden = -std::numeric_limits<acc>::infinity();
  if (mask.is_bool) {
    const bool* m = static_cast<const bool*>(mask.data) + offset;
    if (stride == 0) {
      if (!m[0])
        for (int64_t c = 0; c < n; ++c) at(c) = kHidden;
    } else if (stride == 1) {
      for (int64_t c = 0; c < n; ++c) at(c) = m[c] ? at(c) : kHidden;
    } else {
      for (int64_t c = 0; c < n; ++c) at(c) = m[c * stride] ? at(c) : kHidden;
    }
  } else {
    const scalar_t* m = static_cast<const scalar_t*>(mask.data) + offset;
    if (stride == 0) {
      const acc add = static_cast<acc>(m[0]);
      for (int64_t c = 0; c < n; ++c) at(c) += add;
    } else if (stride == 1) {
      for (int64_t c = 0; c < n; ++c) at(c) += static_cast<acc>(m[c]);
    } else {
      for (int64_t c = 0; c < n; ++c) at(c) += static_cast<acc>(m[c * stride]);
    }
  }
}

// The mask's tile applied to a tile of logits x (n_outer lines of ld): x[o * ld + c] op=
// mask[offset + o * outer_stride + c * inner_stride]. Walks the mask along its smaller stride,
// whichever way that runs through x: a row-major (Lq, Lk) mask read down its columns would
// touch a new cache line (and page) per element.
template <typename scalar_t, typename acc>
void apply_mask_tile(const MaskView& mask, int64_t offset, int64_t outer_stride, int64_t inner_stride,
                     int64_t n_outer, int64_t n_inner, acc* __restrict__ x, int64_t ld) {
  if (outer_stride != 0 && std::abs(outer_stride) < std::abs(inner_stride)) {
    for (int64_t c = 0; c < n_inner; ++c) {
      if (outer_stride == 1) {
        // The next tile along these lines is the next one the forward reads; fetch it now.
        const char* next = static_cast<const char*>(mask.data) +
                           (offset + c * inner_stride + n_outer) * (mask.is_bool ? 1 : sizeof(scalar_t));
        const int64_t bytes = n_outer * (mask.is_bool ? 1 : sizeof(scalar_t));
        for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(next + b);
      }
      acc* column = x + c;
      apply_mask_line<scalar_t, acc>(mask, offset + c * inner_stride, outer_stride, n_outer,
                                     [column, ld](int64_t o) -> acc& { return column[o * ld]; });
    }
    return;
  }
  for (int64_t o = 0; o < n_outer; ++o) {
    acc* line = x + o * ld;
    apply_mask_line<scalar_t, acc>(mask, offset + o * outer_stride, inner_stride, n_inner,
                                   [line](int64_t c) -> acc& { return line[c]; });
  }
}

template <typename acc>
BIGKERN_ATTN_INLINE void scale_line(acc* __restrict__ x, int64_t n, acc factor) {
  constexpr int64_t L = Simd<acc>::kLanes;
  const simd_t<acc> f = vsplat(factor);
  for (int64_t c = 0; c < n; c += L) vstore(x + c, vload(x + c) * f);
}

// Where one tile lies in the problem.
struct TilePlace {
  int64_t b, h, bh;  // bh = b * Hq + h
  int64_t i0, nq;    // queries i0 .. i0 + nq - 1
  int64_t j0, nk;    // keys j0 .. j0 + nk - 1
  int64_t mask_offset(const MaskView& m, int64_t i, int64_t j) const {
    return b * m.sb + h * m.sh + i * m.si + j * m.sj;
  }
};

// Forward, one key tile, transposed layout: s[j * ld + c] holds the raw score of key j0 + j and
// query i0 + c (ld a multiple of kNR, lanes past nq are padding). Turns it into the tile's
// un-normalised probabilities (with dropout applied), updates the running max m and sum l of
// every query, and rescales the query's output accumulator row o[c * ldo ...] when its max moved.
// Queries are the vector lanes, so max and sum run down columns with no horizontal reductions.
//
// Without a mask and with scale > 0, scaling commutes with the max, so the logits are left
// unscaled (m is then in units of q.k, see forward_logit_unit) and the scale is folded into the
// exponent: one pass over the tile fewer.
inline bool forward_folds_scale(const AttentionProblem& p) { return p.mask.data == nullptr && p.scale > 0; }

// What one unit of the forward's logits (and of its running max) is worth in natural-log units.
template <typename acc>
acc forward_logit_unit(const AttentionProblem& p) {
  return forward_folds_scale(p) ? static_cast<acc>(p.scale) : acc(1);
}

template <typename scalar_t, typename acc>
void forward_softmax_tile(const AttentionProblem& p, const Visibility& vis, const DropoutGenerator& dropout,
                          const TilePlace& t, acc* __restrict__ s, int64_t ld, acc* __restrict__ m,
                          acc* __restrict__ l, acc* __restrict__ alpha, acc* __restrict__ o, int64_t ldo) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  constexpr acc kHidden = -std::numeric_limits<acc>::infinity();
  if (!forward_folds_scale(p)) {
    for (int64_t j = 0; j < t.nk; ++j) scale_line(s + j * ld, ld, static_cast<acc>(p.scale));
  }
  if (p.mask.data != nullptr)
    apply_mask_tile<scalar_t>(p.mask, t.mask_offset(p.mask, t.i0, t.j0), p.mask.sj, p.mask.si, t.nk, t.nq, s, ld);
  if (vis.causal != 0) {
    // Key j0 + j is hidden from the queries before i = j0 + j - shift.
    for (int64_t j = 0; j < t.nk; ++j) {
      const int64_t hidden = std::clamp<int64_t>(t.j0 + j - vis.shift - t.i0, 0, t.nq);
      for (int64_t c = 0; c < hidden; ++c) s[j * ld + c] = kHidden;
    }
  }
  const V log2e = vsplat(static_cast<acc>(kLog2e) * forward_logit_unit<acc>(p)), neg_inf = vsplat(kHidden);
  for (int64_t c = 0; c < ld; c += L) {
    V tile_max = neg_inf;
    for (int64_t j = 0; j < t.nk; ++j) tile_max = vmax(tile_max, vload(s + j * ld + c));
    const V m_old = vload(m + c);
    const V m_new = vmax(m_old, tile_max);
    // A query that has seen no key yet keeps max -inf; subtracting 0 instead keeps its
    // probabilities exp2(-inf) = 0 rather than NaN.
    const V m_sub = m_new == neg_inf ? V{} : m_new;
    V sum = V{};
    for (int64_t j = 0; j < t.nk; ++j) {
      const V prob = exp2_simd((vload(s + j * ld + c) - m_sub) * log2e);
      vstore(s + j * ld + c, prob);
      sum += prob;
    }
    const V a = exp2_simd((m_old - m_sub) * log2e);
    vstore(alpha + c, a);
    vstore(l + c, vload(l + c) * a + sum);
    vstore(m + c, m_new);
  }
  if (dropout.active) dropout.drop_columns(t.bh, t.i0, t.nq, t.j0, t.nk, s, ld);
  for (int64_t c = 0; c < t.nq; ++c) {
    if (alpha[c] != acc(1)) scale_line(o + c * ldo, ldo, alpha[c]);
  }
}

// Backward, one tile, row layout: s[r * ld + c] holds the raw score of query i0 + r and key
// j0 + c, dp[r * ld + c] the raw dO . V (ld a multiple of kNR; columns past nk are padding).
// Recomputes P = exp(x - lse) and leaves in s the dropped-and-scaled probabilities (dV's
// factor) and in dp dS = P * (dP * keep / (1 - p) - Delta) (dQ's and dK's factor, before the
// softmax scale). Rows with lse = +inf (no visible key) are zero. `keep` is scratch of ld.
// Not inlined: both dQ schemes of the backward run this one copy (identical rounding).
template <typename scalar_t, typename acc>
__attribute__((noinline)) void backward_softmax_grad_tile(const AttentionProblem& p, const Visibility& vis,
                                                          const DropoutGenerator& dropout, const TilePlace& t,
                                                          const float* lse, const acc* delta, acc* s, acc* dp,
                                                          int64_t ld, acc* keep) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  constexpr acc kHidden = -std::numeric_limits<acc>::infinity();
  const acc keep_scale = static_cast<acc>(1.0 / (1.0 - p.dropout_p));
  const V log2e = vsplat(static_cast<acc>(kLog2e));
  if (dropout.active)
    for (int64_t c = t.nk; c < ld; ++c) keep[c] = acc(0);
  scale_line(s, t.nq * ld, static_cast<acc>(p.scale));
  if (p.mask.data != nullptr)
    apply_mask_tile<scalar_t>(p.mask, t.mask_offset(p.mask, t.i0, t.j0), p.mask.si, p.mask.sj, t.nq, t.nk, s, ld);
  for (int64_t r = 0; r < t.nq; ++r) {
    const int64_t i = t.i0 + r;
    acc* __restrict__ x = s + r * ld;
    acc* __restrict__ g = dp + r * ld;
    const float row_lse = lse[t.bh * p.len_q + i];
    const int64_t visible = vis.visible_prefix(i, t.j0, t.nk);
    if (row_lse == std::numeric_limits<float>::infinity() || visible == 0) {
      std::fill(x, x + ld, acc(0));
      std::fill(g, g + ld, acc(0));
      continue;
    }
    for (int64_t c = visible; c < ld; ++c) x[c] = kHidden;
    const V lse_v = vsplat(static_cast<acc>(row_lse)), delta_v = vsplat(delta[t.bh * p.len_q + i]);
    if (dropout.active) {
      dropout.keep_line(i, t.bh, t.j0, t.nk, keep_scale, keep);
      for (int64_t c = 0; c < ld; c += L) {
        const V prob = exp2_simd((vload(x + c) - lse_v) * log2e);
        const V z = vload(keep + c);
        vstore(g + c, prob * (vload(g + c) * z - delta_v));
        vstore(x + c, prob * z);
      }
    } else {
      for (int64_t c = 0; c < ld; c += L) {
        const V prob = exp2_simd((vload(x + c) - lse_v) * log2e);
        vstore(g + c, prob * (vload(g + c) - delta_v));
        vstore(x + c, prob);
      }
    }
  }
}
