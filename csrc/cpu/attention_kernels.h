// CPU flash attention, forward and backward, written once and compiled once per instruction set.
//
// Included by attention_kernels_<isa>.cpp inside `namespace bigkern::cpu::<isa>` after that file
// has switched the compiler's target. float16 / bfloat16 are computed in float32, float32 and
// float64 in their own type (acc below).
//
// Forward (FlashAttention): one task per (batch, query head, query tile), at::parallel_for over
// all of them. A task packs its query tile transposed (Q^T, D x tile) once, then walks the key
// tiles: S^T = K Q^T (keys x queries, K read in place), the online softmax down the columns of
// S^T (queries are the vector lanes: no horizontal reductions), O += P V (V read in place).
// Under a causal mask the walk stops at the last key any query of the tile sees. Memory: the
// output, and per thread a few tiles of scratch; nothing is Lq x Lk.
//
// Backward (FlashAttention-2): Delta = rowsum(dO * O) first; then per (batch, kv head, key tile)
// K^T and V^T are packed once and every query tile of every query head of the GQA group
// recomputes S = Q K^T, dP = dO V^T, P = exp(S - lse) and dS = P (dP - Delta), accumulating
// dV += P^T dO and dK += dS^T Q in the task's own tile buffers: no atomics. dQ += dS K has two
// schemes, chosen by how well each keeps the threads busy:
//   * fused: one task per (batch, kv head) walks all its key tiles and owns the whole dQ of its
//     query heads, so dQ accumulates in the same walk (5 tile products per tile pair);
//   * two pass: tasks per key tile as above (dK, dV only), then tasks per query tile that
//     recompute S, dP and dS and accumulate dQ over the key tiles (7 products per pair, but
//     parallel over tiles when there are fewer kv heads than threads).
// Both accumulate every dQ element over the key tiles in increasing order through the same
// non-inlined code, so they give the same bits. The CPU backward is therefore deterministic
// whatever the `deterministic` flag says, and independent of the thread count.
//
// Tile sizes: 64 queries x 64 keys, forward and backward. At D = 64 a forward task's working set
// is Q^T, the K and V tiles, S^T and the output accumulator, 16 KiB each (~80 KiB; the
// backward's nine tile buffers ~150 KiB): well inside a 512 KiB-2 MiB L2 even at D = 256, while
// the K x 16 panel of B the micro-kernel sweeps (4 KiB at K = 64) stays in the 32 KiB L1.
// Measured on Zen 3 (B=2, H=8, L=1024, D=64, one thread): query and key tiles from 48 to 256 are
// within noise (+-5%) of 64 x 64 forward and backward; key tiles of 32 cost 20% more in the
// forward (per-tile bookkeeping: the running max, rescaling the output). 64 is the smallest
// size on that plateau, which leaves the most cache for large head dims.
//
// float64 (the gradcheck dtype) recomputes P from the float32 lse of the contract, so its
// gradients carry a relative error of about 1e-7 (the forward is exact to ~1e-15).

#include "cpu/attention_simd.h"
#include "cpu/attention_philox_simd.h"
#include "cpu/attention_tile_gemm.h"
#include "cpu/attention_softmax.h"

template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

inline constexpr int64_t kForwardQueryTile = 64;
inline constexpr int64_t kForwardKeyTile = 64;
inline constexpr int64_t kBackwardQueryTile = 64;
inline constexpr int64_t kBackwardKeyTile = 64;
static_assert(kForwardKeyTile % 4 == 0 && kBackwardKeyTile % 4 == 0, "dropout draws keys in groups of four");

constexpr int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return div_up(a, b) * b; }

// Tile r of n in the order 0, n-1, 1, n-2, ...: at::parallel_for hands each thread a contiguous
// range of tasks, and under a causal mask late query tiles (early key tiles) cost the most, so
// interleaving cheap and costly tiles balances the threads.
inline int64_t zigzag(int64_t r, int64_t n) { return (r & 1) ? n - 1 - r / 2 : r / 2; }

// Per-thread scratch, 64-byte aligned (c10's CPU allocator).
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n) : data_(n > 0 ? static_cast<T*>(c10::alloc_cpu(n * sizeof(T))) : nullptr) {}
  ~Scratch() { c10::free_cpu(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }

 private:
  T* data_;
};

template <typename scalar_t>
const scalar_t* rows_at(const RowsView& view, int64_t b, int64_t h, int64_t i) {
  return static_cast<const scalar_t*>(view.data) + b * view.sb + h * view.sh + i * view.si;
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
void attention_forward_kernel(const AttentionProblem& p, scalar_t* out, float* lse) {
  using acc = acc_t<scalar_t>;
  constexpr int64_t NR = kNR<acc>;
  constexpr int64_t Bq = kForwardQueryTile, Bk = kForwardKeyTile;
  const int64_t D = p.dim_qk, Dv = p.dim_v, Dvp = round_up(Dv, NR), group = p.heads_q / p.heads_kv;
  const int64_t q_tiles = div_up(p.len_q, Bq);
  const int64_t ldq_max = round_up(Bq, NR);
  const Visibility vis(p);
  const DropoutGenerator dropout(p);
  const acc keep_scale = static_cast<acc>(1.0 / (1.0 - p.dropout_p));
  const acc unit = forward_logit_unit<acc>(p);

  at::parallel_for(0, p.batch * p.heads_q * q_tiles, 1, [&](int64_t begin, int64_t end) {
    constexpr bool kInPlace = std::is_same_v<scalar_t, acc>;  // K and V rows read without a copy
    Scratch<acc> keys(kInPlace ? 0 : Bk * D), values(kInPlace && Dv == Dvp ? 0 : Bk * Dvp);
    Scratch<acc> q_t(D * ldq_max), scores(Bk * ldq_max), o(Bq * Dvp);
    Scratch<acc> row_max(ldq_max), row_sum(ldq_max), rescale(ldq_max);
    for (int64_t task = begin; task < end; ++task) {
      TilePlace t{};
      t.bh = task / q_tiles;
      t.b = t.bh / p.heads_q;
      t.h = t.bh % p.heads_q;
      const int64_t kvh = t.h / group;
      t.i0 = zigzag(task % q_tiles, q_tiles) * Bq;
      t.nq = std::min(Bq, p.len_q - t.i0);
      const int64_t ld = round_up(t.nq, NR);
      pack_rows_transposed(rows_at<scalar_t>(p.q, t.b, t.h, t.i0), p.q.si, t.nq, D, q_t.get(), ld);
      std::fill(row_max.get(), row_max.get() + ld, -std::numeric_limits<acc>::infinity());
      std::fill(row_sum.get(), row_sum.get() + ld, acc(0));
      std::fill(o.get(), o.get() + t.nq * Dvp, acc(0));

      const int64_t key_end = vis.key_end(t.i0, t.nq);
      for (t.j0 = 0; t.j0 < key_end; t.j0 += Bk) {
        t.nk = std::min(Bk, key_end - t.j0);
        int64_t ldk = 0, ldv = 0;
        const acc* k_rows = rows_as_acc(rows_at<scalar_t>(p.k, t.b, kvh, t.j0), p.k.si, t.nk, D, D, keys.get(), ldk);
        tile_gemm<acc, false>(t.nk, ld, D, k_rows, ldk, 1, q_t.get(), ld, scores.get(), ld);
        forward_softmax_tile<scalar_t>(p, vis, dropout, t, scores.get(), ld, row_max.get(), row_sum.get(),
                                       rescale.get(), o.get(), Dvp);
        const acc* v_rows =
            rows_as_acc(rows_at<scalar_t>(p.v, t.b, kvh, t.j0), p.v.si, t.nk, Dv, Dvp, values.get(), ldv);
        tile_gemm<acc, true>(t.nq, Dvp, t.nk, scores.get(), 1, ld, v_rows, ldv, o.get(), Dvp);
      }

      for (int64_t c = 0; c < t.nq; ++c) {
        const int64_t row = t.bh * p.len_q + t.i0 + c;
        scalar_t* __restrict__ dst = out + row * Dv;
        const acc* __restrict__ src = o.get() + c * Dvp;
        const acc total = row_sum.get()[c];
        if (total == acc(0)) {  // no visible key: output 0, lse +inf
          std::fill(dst, dst + Dv, scalar_t(0));
          lse[row] = std::numeric_limits<float>::infinity();
          continue;
        }
        const acc factor = (dropout.active ? keep_scale : acc(1)) / total;
        for (int64_t e = 0; e < Dv; ++e) dst[e] = static_cast<scalar_t>(src[e] * factor);
        lse[row] = static_cast<float>(row_max.get()[c] * unit + std::log(total));
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
class AttentionBackward {
 public:
  using acc = acc_t<scalar_t>;
  static constexpr int64_t NR = kNR<acc>;
  static constexpr int64_t Bq = kBackwardQueryTile, Bk = kBackwardKeyTile;
  static constexpr int64_t kLdk = round_up(Bk, NR);

  AttentionBackward(const AttentionProblem& p, const RowsView& grad_out, const RowsView& out, const float* lse,
                    scalar_t* grad_q, scalar_t* grad_k, scalar_t* grad_v)
      : p_(p), grad_out_(grad_out), lse_(lse), grad_q_(grad_q), grad_k_(grad_k), grad_v_(grad_v),
        vis_(p), dropout_(p), D_(p.dim_qk), Dv_(p.dim_v), Dp_(round_up(D_, NR)), Dvp_(round_up(Dv_, NR)),
        group_(p.heads_q / p.heads_kv), delta_(p.batch * p.heads_q * p.len_q) {
    compute_delta(out);
  }

  void run() {
    const int64_t units = p_.batch * p_.heads_kv, threads = at::get_num_threads();
    // Fused costs 5 tile products per tile pair but parallelises over kv heads only; the two
    // passes cost 7 and parallelise over tiles.
    if (5 * threads * div_up(units, threads) <= 7 * units) run_fused();
    else run_two_pass();
  }

 private:
  // Per-thread tile buffers.
  struct Workspace {
    Scratch<acc> k_t, v_t, k_rows, q_rows, do_rows, s, dp, dk, dv, keep;
    Workspace(int64_t D, int64_t Dv, int64_t Dp, int64_t Dvp)
        : k_t(D * kLdk), v_t(Dv * kLdk), k_rows(Bk * Dp), q_rows(Bq * Dp), do_rows(Bq * Dvp), s(Bq * kLdk),
          dp(Bq * kLdk), dk(Bk * Dp), dv(Bk * Dvp), keep(kLdk) {}
  };

  // Delta_i = dO_i . O_i, the row sums of dP * P that dS subtracts.
  void compute_delta(const RowsView& out) {
    const int64_t rows = p_.batch * p_.heads_q * p_.len_q;
    at::parallel_for(0, rows, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t i = row % p_.len_q, bh = row / p_.len_q;
        const int64_t b = bh / p_.heads_q, h = bh % p_.heads_q;
        const scalar_t* dO = rows_at<scalar_t>(grad_out_, b, h, i);
        const scalar_t* o = rows_at<scalar_t>(out, b, h, i);
        acc total = 0;
        for (int64_t e = 0; e < Dv_; ++e) total += static_cast<acc>(dO[e]) * static_cast<acc>(o[e]);
        delta_.get()[row] = total;
      }
    });
  }

  // K^T and V^T of keys [j0, j0 + nk) of kv head (b, kvh), for S = Q K^T and dP = dO V^T.
  void pack_key_tile(Workspace& w, int64_t b, int64_t kvh, int64_t j0, int64_t nk) const {
    pack_rows_transposed(rows_at<scalar_t>(p_.k, b, kvh, j0), p_.k.si, nk, D_, w.k_t.get(), kLdk);
    pack_rows_transposed(rows_at<scalar_t>(p_.v, b, kvh, j0), p_.v.si, nk, Dv_, w.v_t.get(), kLdk);
  }

  // Query rows and dO rows [i0, i0 + nq) of head (b, h) as acc matrices padded to D_ / Dv_
  // (read in place where they already are), for the products that use them as A or as B.
  const acc* query_rows(Workspace& w, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t& ld) const {
    return rows_as_acc(rows_at<scalar_t>(p_.q, b, h, i0), p_.q.si, nq, D_, Dp_, w.q_rows.get(), ld);
  }
  const acc* grad_out_rows(Workspace& w, int64_t b, int64_t h, int64_t i0, int64_t nq, int64_t& ld) const {
    return rows_as_acc(rows_at<scalar_t>(grad_out_, b, h, i0), grad_out_.si, nq, Dv_, Dvp_, w.do_rows.get(), ld);
  }
  // Key rows [j0, j0 + nk) of kv head (b, kvh), the B of dQ += dS K.
  const acc* key_rows(Workspace& w, int64_t b, int64_t kvh, int64_t j0, int64_t nk, int64_t& ld) const {
    return rows_as_acc(rows_at<scalar_t>(p_.k, b, kvh, j0), p_.k.si, nk, D_, Dp_, w.k_rows.get(), ld);
  }

  // Leaves P (dropped and scaled) in w.s and dS in w.dp for the tile pair t, given its query
  // rows q (ldq) and dO rows (lddo), with K^T and V^T packed in w.
  void recompute_tile(Workspace& w, const TilePlace& t, const acc* q, int64_t ldq, const acc* dO, int64_t lddo) const {
    tile_gemm<acc, false>(t.nq, kLdk, D_, q, ldq, 1, w.k_t.get(), kLdk, w.s.get(), kLdk);
    tile_gemm<acc, false>(t.nq, kLdk, Dv_, dO, lddo, 1, w.v_t.get(), kLdk, w.dp.get(), kLdk);
    backward_softmax_grad_tile<scalar_t>(p_, vis_, dropout_, t, lse_, delta_.get(), w.s.get(), w.dp.get(), kLdk,
                                         w.keep.get());
  }

  // dK and dV of keys [j0, j0 + nk) of kv head (b, kvh), summed over the query heads of its
  // group; with dq != nullptr also adds every pair's dS K to dq (rows (g * Lq + i) * ld_dq for
  // query head kvh * group + g, unscaled).
  void key_tile(Workspace& w, int64_t b, int64_t kvh, int64_t j0, acc* dq, int64_t ld_dq) const {
    const int64_t nk = std::min(Bk, p_.len_k - j0);
    pack_key_tile(w, b, kvh, j0, nk);
    int64_t ld_kr = 0;
    const acc* k_rows = dq != nullptr ? key_rows(w, b, kvh, j0, nk, ld_kr) : nullptr;
    std::fill(w.dk.get(), w.dk.get() + nk * Dp_, acc(0));
    std::fill(w.dv.get(), w.dv.get() + nk * Dvp_, acc(0));
    const int64_t first_tile = vis_.first_query(j0) / Bq;
    for (int64_t g = 0; g < group_; ++g) {
      TilePlace t{};
      t.b = b;
      t.h = kvh * group_ + g;
      t.bh = b * p_.heads_q + t.h;
      t.j0 = j0;
      t.nk = nk;
      for (t.i0 = first_tile * Bq; t.i0 < p_.len_q; t.i0 += Bq) {
        t.nq = std::min(Bq, p_.len_q - t.i0);
        int64_t ldq = 0, lddo = 0;
        const acc* q = query_rows(w, b, t.h, t.i0, t.nq, ldq);
        const acc* dO = grad_out_rows(w, b, t.h, t.i0, t.nq, lddo);
        recompute_tile(w, t, q, ldq, dO, lddo);
        tile_gemm<acc, true>(nk, Dvp_, t.nq, w.s.get(), 1, kLdk, dO, lddo, w.dv.get(), Dvp_);
        tile_gemm<acc, true>(nk, Dp_, t.nq, w.dp.get(), 1, kLdk, q, ldq, w.dk.get(), Dp_);
        if (dq != nullptr)
          tile_gemm<acc, true>(t.nq, Dp_, nk, w.dp.get(), kLdk, 1, k_rows, ld_kr, dq + (g * p_.len_q + t.i0) * ld_dq,
                               ld_dq);
      }
    }
    const acc scale = static_cast<acc>(p_.scale);
    const int64_t row0 = (b * p_.heads_kv + kvh) * p_.len_k + j0;
    for (int64_t r = 0; r < nk; ++r) {
      scalar_t* __restrict__ gk = grad_k_ + (row0 + r) * D_;
      scalar_t* __restrict__ gv = grad_v_ + (row0 + r) * Dv_;
      const acc* __restrict__ dk = w.dk.get() + r * Dp_;
      const acc* __restrict__ dv = w.dv.get() + r * Dvp_;
      for (int64_t e = 0; e < D_; ++e) gk[e] = static_cast<scalar_t>(dk[e] * scale);
      for (int64_t e = 0; e < Dv_; ++e) gv[e] = static_cast<scalar_t>(dv[e]);
    }
  }

  // dQ of query rows [i0, i0 + nq) of head (b, h), accumulated over the key tiles into dq (ld_dq).
  void query_tile(Workspace& w, int64_t b, int64_t h, int64_t i0, acc* dq, int64_t ld_dq) const {
    TilePlace t{};
    t.b = b;
    t.h = h;
    t.bh = b * p_.heads_q + h;
    t.i0 = i0;
    t.nq = std::min(Bq, p_.len_q - i0);
    const int64_t kvh = h / group_;
    int64_t ldq = 0, lddo = 0, ld_kr = 0;
    const acc* q = query_rows(w, b, h, i0, t.nq, ldq);
    const acc* dO = grad_out_rows(w, b, h, i0, t.nq, lddo);
    const int64_t key_end = vis_.key_end(i0, t.nq);
    for (t.j0 = 0; t.j0 < key_end; t.j0 += Bk) {
      t.nk = std::min(Bk, p_.len_k - t.j0);  // whole tiles, as key_tile() cuts them
      pack_key_tile(w, b, kvh, t.j0, t.nk);
      const acc* k_rows = key_rows(w, b, kvh, t.j0, t.nk, ld_kr);
      recompute_tile(w, t, q, ldq, dO, lddo);
      tile_gemm<acc, true>(t.nq, Dp_, t.nk, w.dp.get(), kLdk, 1, k_rows, ld_kr, dq, ld_dq);
    }
  }

  // dQ accumulated in place where grad_q already is an acc matrix of padded width, else in
  // scratch; `rows` rows from grad_q row `row0` on.
  bool dq_in_place() const { return std::is_same_v<scalar_t, acc> && Dp_ == D_; }
  void store_dq(const acc* dq, int64_t ld_dq, int64_t row0, int64_t rows) const {
    const acc scale = static_cast<acc>(p_.scale);
    for (int64_t r = 0; r < rows; ++r) {
      scalar_t* __restrict__ dst = grad_q_ + (row0 + r) * D_;
      const acc* __restrict__ src = dq + r * ld_dq;
      for (int64_t e = 0; e < D_; ++e) dst[e] = static_cast<scalar_t>(src[e] * scale);
    }
  }

  void run_fused() {
    const int64_t heads_rows = group_ * p_.len_q;
    at::parallel_for(0, p_.batch * p_.heads_kv, 1, [&](int64_t begin, int64_t end) {
      Workspace w(D_, Dv_, Dp_, Dvp_);
      Scratch<acc> dq_scratch(dq_in_place() ? 0 : heads_rows * Dp_);
      for (int64_t unit = begin; unit < end; ++unit) {
        const int64_t b = unit / p_.heads_kv, kvh = unit % p_.heads_kv;
        const int64_t row0 = (b * p_.heads_q + kvh * group_) * p_.len_q;
        acc* dq = dq_in_place() ? reinterpret_cast<acc*>(grad_q_) + row0 * D_ : dq_scratch.get();
        std::fill(dq, dq + heads_rows * Dp_, acc(0));
        for (int64_t j0 = 0; j0 < p_.len_k; j0 += Bk) key_tile(w, b, kvh, j0, dq, Dp_);
        store_dq(dq, Dp_, row0, heads_rows);
      }
    });
  }

  void run_two_pass() {
    const int64_t k_tiles = div_up(p_.len_k, Bk), q_tiles = div_up(p_.len_q, Bq);
    at::parallel_for(0, p_.batch * p_.heads_kv * k_tiles, 1, [&](int64_t begin, int64_t end) {
      Workspace w(D_, Dv_, Dp_, Dvp_);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t unit = task / k_tiles, b = unit / p_.heads_kv, kvh = unit % p_.heads_kv;
        key_tile(w, b, kvh, zigzag(task % k_tiles, k_tiles) * Bk, nullptr, 0);
      }
    });
    at::parallel_for(0, p_.batch * p_.heads_q * q_tiles, 1, [&](int64_t begin, int64_t end) {
      Workspace w(D_, Dv_, Dp_, Dvp_);
      Scratch<acc> dq_scratch(dq_in_place() ? 0 : Bq * Dp_);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bh = task / q_tiles, b = bh / p_.heads_q, h = bh % p_.heads_q;
        const int64_t i0 = zigzag(task % q_tiles, q_tiles) * Bq, nq = std::min(Bq, p_.len_q - i0);
        const int64_t row0 = bh * p_.len_q + i0;
        acc* dq = dq_in_place() ? reinterpret_cast<acc*>(grad_q_) + row0 * D_ : dq_scratch.get();
        std::fill(dq, dq + nq * Dp_, acc(0));
        query_tile(w, b, h, i0, dq, Dp_);
        store_dq(dq, Dp_, row0, nq);
      }
    });
  }

  const AttentionProblem& p_;
  const RowsView grad_out_;
  const float* lse_;
  scalar_t* grad_q_;
  scalar_t* grad_k_;
  scalar_t* grad_v_;
  const Visibility vis_;
  const DropoutGenerator dropout_;
  const int64_t D_, Dv_, Dp_, Dvp_, group_;
  Scratch<acc> delta_;
};

// ---------------------------------------------------------------------------------------------
// Entries and table
// ---------------------------------------------------------------------------------------------

#define BIGKERN_ATTN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void attention_forward_entry(const AttentionProblem& p, void* out, float* lse) {
  BIGKERN_ATTN_DISPATCH(p.dtype, "bigkern::attention_forward",
                        [&] { attention_forward_kernel<scalar_t>(p, static_cast<scalar_t*>(out), lse); });
}

inline void attention_backward_entry(const AttentionProblem& p, const RowsView& grad_out, const RowsView& out,
                                     const float* lse, void* grad_q, void* grad_k, void* grad_v) {
  BIGKERN_ATTN_DISPATCH(p.dtype, "bigkern::attention_backward", [&] {
    AttentionBackward<scalar_t>(p, grad_out, out, lse, static_cast<scalar_t*>(grad_q),
                                static_cast<scalar_t*>(grad_k), static_cast<scalar_t*>(grad_v))
        .run();
  });
}

#undef BIGKERN_ATTN_DISPATCH

const AttentionKernelTable& attention_kernels() {
  static const AttentionKernelTable table{&attention_forward_entry, &attention_backward_entry};
  return table;
}
