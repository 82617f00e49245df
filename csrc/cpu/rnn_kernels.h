// CPU recurrent kernels (LSTM, GRU, RNN), written once and compiled once per instruction set
// (included inside `namespace bigkern::cpu::<isa>` after the ISA file has switched the target).
//
// The sequence runs in ONE OpenMP parallel region, the CPU form of a persistent kernel: each
// thread owns a fixed set of hidden-unit blocks for the whole sequence, so the slice of the
// packed recurrent weights it multiplies by stays in its own cache from step to step, and the
// threads meet at a barrier once per step (twice with a projection), instead of forking a
// parallel region per step.
//
// Forward step, per owned block of kL hidden units (kL = vector lanes): one register tile holds
// the G gate pre-activations of those units for R batch rows (G vectors per row); the recurrent
// product h_prev @ w_hh^T accumulates into it from a packed panel (for each k, the G gates' kL
// weights side by side), and the gate math runs on the tile before anything is stored: the
// gates never travel through memory as separate tensors, only h', c' and the workspace do.
// The cell does the same with two products (input @ w_ih^T, then h @ w_hh^T) into one tile.
//
// Backward through time, per step in reverse visiting order: (proj: dh_raw = dh @ w_hr,) the
// pointwise backward from the workspace on owned unit blocks, then dh_prev = d_gates @ w_hh
// split over column blocks. The large products over all steps (grad_w_hh, grad_w_hr) are done
// once at the end by rnn.cpp with ATen's GEMM.
//
// Row tiles: states live in buffers padded to a multiple of kRowPad rows (zeros beyond B), so
// every register tile is full and the micro-kernel has compile-time shape; results of rows past
// the live batch of a step are computed and dropped, never stored.

#include "cpu/attention_simd.h"  // simd_t, vload/vstore, vsplat, fmadd, exp2_simd

namespace rnn_detail {

constexpr int64_t kRowPad = 24;  // a multiple of every register-tile height below (3, 4, 6, 8)

template <int S>
constexpr int rows_for_slots() {
  return S == 4 ? 3 : S == 3 ? 4 : S == 2 ? 6 : 8;  // at most 12 accumulators + loads in 16 registers
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
inline T load_as(const void* p, int64_t i, c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return static_cast<T>(static_cast<const float*>(p)[i]);
    case c10::ScalarType::Double: return static_cast<T>(static_cast<const double*>(p)[i]);
    default: return static_cast<T>(static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]));
  }
}

template <typename T>
inline void store_as(void* p, int64_t i, T v, c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case c10::ScalarType::Double: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    default: static_cast<c10::BFloat16*>(p)[i] = c10::BFloat16(static_cast<float>(v)); break;
  }
}

// C[r][s] += sum_k A[r * lda + k] * B[k * ldb + s * L ...]: R rows of A (read one element at a time,
// broadcast), S vectors of B per k. The one product every kernel here is built from.
template <typename acc, int R, int S>
BIGKERN_ATTN_INLINE void tile_product(int64_t K, const acc* __restrict__ a, int64_t lda, const acc* __restrict__ b,
                                      int64_t ldb, simd_t<acc> (&c)[R][S]) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  for (int64_t k = 0; k < K; ++k) {
    V bv[S];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) bv[s] = vload(b + k * ldb + s * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V av = vsplat(a[r * lda + k]);
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) c[r][s] = fmadd(av, bv[s], c[r][s]);
    }
  }
}

template <typename acc>
BIGKERN_ATTN_INLINE simd_t<acc> tanh_v(simd_t<acc> x) {
  return vsplat(acc(2)) * sigmoid_v<acc>(x + x) - vsplat(acc(1));
}

// Load / store kL values of row-major data starting at column j, `n` of them valid (the rest 0).
template <typename acc>
BIGKERN_ATTN_INLINE simd_t<acc> load_part(const void* p, int64_t base, int64_t n, c10::ScalarType dtype) {
  constexpr int64_t L = Simd<acc>::kLanes;
  if (n == L && dtype == (std::is_same_v<acc, float> ? c10::ScalarType::Float : c10::ScalarType::Double)) {
    return vload(static_cast<const acc*>(p) + base);
  }
  simd_t<acc> v{};
  for (int64_t l = 0; l < n; ++l) v[l] = load_as<acc>(p, base + l, dtype);
  return v;
}

template <typename acc>
BIGKERN_ATTN_INLINE void store_part(void* p, int64_t base, int64_t n, simd_t<acc> v, c10::ScalarType dtype) {
  constexpr int64_t L = Simd<acc>::kLanes;
  if (n == L && dtype == (std::is_same_v<acc, float> ? c10::ScalarType::Float : c10::ScalarType::Double)) {
    vstore(static_cast<acc*>(p) + base, v);
    return;
  }
  for (int64_t l = 0; l < n; ++l) store_as<acc>(p, base + l, v[l], dtype);
}

template <typename acc>
BIGKERN_ATTN_INLINE simd_t<acc> load_acc(const acc* p, int64_t n) {
  if (n == Simd<acc>::kLanes) return vload(p);
  simd_t<acc> v{};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

template <typename acc>
BIGKERN_ATTN_INLINE void store_acc(acc* p, int64_t n, simd_t<acc> v) {
  if (n == Simd<acc>::kLanes) {
    vstore(p, v);
    return;
  }
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

// Which thread owns which of `units` work units: contiguous, balanced ranges.
struct Range {
  int64_t begin, end;
};
inline Range share(int64_t units, int thread, int threads) {
  return {units * thread / threads, units * (thread + 1) / threads};
}

inline int team_size(int64_t units) {
  if (at::in_parallel_region()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), units)));
}

inline int64_t gate_count(int64_t mode) { return mode == 0 ? 4 : mode == 1 ? 3 : 1; }

// Packs `w` (G*H rows of K, dtype) into panels: panel[blk][k][slot * L + l] = w[g * H + blk * L + l][k]
// for the gate g mapped to `slot` (slot_of[g]); units past H and unmapped slots are zero.
template <typename acc>
std::vector<acc> pack_gate_panels(const void* w, c10::ScalarType dtype, int64_t gates, int64_t hidden, int64_t K,
                                  int slots, const int* slot_of) {
  constexpr int64_t L = Simd<acc>::kLanes;
  const int64_t blocks = (hidden + L - 1) / L;
  std::vector<acc> panel(static_cast<size_t>(blocks * K * slots * L), acc(0));
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      acc* dst = panel.data() + blk * K * slots * L;
      for (int64_t g = 0; g < gates; ++g) {
        for (int64_t l = 0; l < L && blk * L + l < hidden; ++l) {
          const int64_t row = g * hidden + blk * L + l;
          for (int64_t k = 0; k < K; ++k) dst[k * slots * L + slot_of[g] * L + l] = load_as<acc>(w, row * K + k, dtype);
        }
      }
    }
  });
  return panel;
}

// w (rows x cols, dtype) as acc with its columns padded to `ld` (zeros), optionally transposed.
template <typename acc>
std::vector<acc> padded_matrix(const void* w, c10::ScalarType dtype, int64_t rows, int64_t cols, int64_t ld,
                               bool transpose) {
  const int64_t out_rows = transpose ? cols : rows;
  std::vector<acc> m(static_cast<size_t>(out_rows * ld), acc(0));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const acc v = load_as<acc>(w, r * cols + c, dtype);
      if (transpose) {
        m[c * ld + r] = v;
      } else {
        m[r * ld + c] = v;
      }
    }
  }
  return m;
}

// out rows [0, rows) x column block [c0, c0 + 2L) (+)= A (rows x K, lda) @ Bm (K x ld): the plain
// products of the projection and of the backward's dh_prev, in tiles of 6 rows x 2 vectors.
template <typename acc>
void block_product(int64_t rows, int64_t K, const acc* a, int64_t lda, const acc* bm, int64_t ld, int64_t c0, acc* out,
                   int64_t ldo, const acc* add, int64_t ld_add) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  constexpr int R = rows_for_slots<2>();
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    V c[R][2];
    for (int r = 0; r < R; ++r) {
      c[r][0] = add ? vload(add + (r0 + r) * ld_add + c0) : V{};
      c[r][1] = add ? vload(add + (r0 + r) * ld_add + c0 + L) : V{};
    }
    tile_product<acc, R, 2>(K, a + r0 * lda, lda, bm + c0, ld, c);
    for (int r = 0; r < R && r0 + r < rows; ++r) {
      vstore(out + (r0 + r) * ldo + c0, c[r][0]);
      vstore(out + (r0 + r) * ldo + c0 + L, c[r][1]);
    }
  }
}

// The steps of a layer in visiting order: (row offset, live rows) per step.
struct Visit {
  int64_t offset, size;
};
inline std::vector<Visit> visits(const RnnProblem& p) {
  std::vector<int64_t> offsets(p.steps);
  int64_t total = 0;
  for (int64_t t = 0; t < p.steps; ++t) {
    offsets[t] = total;
    total += p.batch_sizes[t];
  }
  std::vector<Visit> order;
  order.reserve(p.steps);
  for (int64_t i = 0; i < p.steps; ++i) {
    const int64_t t = p.reverse ? p.steps - 1 - i : i;
    order.push_back({offsets[t], p.batch_sizes[t]});
  }
  return order;
}

// Gate math on one row's vector of kL units. `v` holds the pre-activations: LSTM i, f, g, o;
// GRU r, z, h_n (w_hn h + b_hn), x_n; RNN the sum. Writes the new state(s) and the workspace row.
template <typename acc>
struct GateMath {
  using V = simd_t<acc>;
  int64_t mode, hidden;

  // Returns h' (LSTM: o * tanh(c'), before any projection); c is updated in place for LSTM.
  BIGKERN_ATTN_INLINE V apply(const V* v, V h_prev, V& c, acc* ws, int64_t n) const {
    if (mode == 0) {
      const V i = sigmoid_v<acc>(v[0]), f = sigmoid_v<acc>(v[1]), g = tanh_v<acc>(v[2]), o = sigmoid_v<acc>(v[3]);
      c = f * c + i * g;
      const V h = o * tanh_v<acc>(c);
      if (ws) {
        store_acc(ws, n, i);
        store_acc(ws + hidden, n, f);
        store_acc(ws + 2 * hidden, n, g);
        store_acc(ws + 3 * hidden, n, o);
        store_acc(ws + 4 * hidden, n, c);
      }
      return h;
    }
    if (mode == 1) {
      const V r = sigmoid_v<acc>(v[0]), z = sigmoid_v<acc>(v[1]);
      const V nn = tanh_v<acc>(v[3] + r * v[2]);
      if (ws) {
        store_acc(ws, n, r);
        store_acc(ws + hidden, n, z);
        store_acc(ws + 2 * hidden, n, nn);
        store_acc(ws + 3 * hidden, n, v[2]);
      }
      return (vsplat(acc(1)) - z) * nn + z * h_prev;
    }
    const V h = mode == 2 ? tanh_v<acc>(v[0]) : vmax(v[0], V{});
    if (ws) store_acc(ws, n, h);
    return h;
  }
};

// ---------------------------------------------------------------------------------------------
// Layer forward
// ---------------------------------------------------------------------------------------------

template <typename acc, int S>
void layer_forward_impl(const RnnProblem& p, const RnnForwardOut& out) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  constexpr int R = rows_for_slots<S>();
  const int64_t G = gate_count(p.mode), H = p.hidden, P = p.out_size, B = p.batch;
  const bool projecting = p.w_hr != nullptr;
  const int64_t blocks = (H + L - 1) / L, B_pad = round_up(B, kRowPad), P_pad = round_up(P, 2 * L);
  const int64_t W = p.mode == 0 ? (projecting ? 6 : 5) * H : p.mode == 1 ? 4 * H : H;
  const int slot_of[4] = {0, 1, 2, 3};
  const std::vector<acc> panels = pack_gate_panels<acc>(p.w_hh, p.dtype, G, H, P, S, slot_of);
  const std::vector<acc> w_hr_t = projecting ? padded_matrix<acc>(p.w_hr, p.dtype, P, H, P_pad, true) : std::vector<acc>();
  std::vector<acc> bias(G * H, acc(0));
  if (p.b_hh) for (int64_t q = 0; q < G * H; ++q) bias[q] = load_as<acc>(p.b_hh, q, p.dtype);
  // States: h in two buffers (read all columns, write owned ones) unless projecting (then the
  // projection phase writes h after a barrier, and one buffer holds it); h_raw for projection.
  std::vector<acc> h_buf[2] = {std::vector<acc>(B_pad * P_pad, acc(0)), std::vector<acc>()};
  for (int64_t r = 0; r < B; ++r)
    for (int64_t j = 0; j < P; ++j) h_buf[0][r * P_pad + j] = load_as<acc>(p.hx, r * P + j, p.dtype);
  if (!projecting) h_buf[1] = h_buf[0];
  std::vector<acc> c_buf(p.mode == 0 ? B_pad * blocks * L : 0, acc(0));
  for (int64_t r = 0; r < B && p.mode == 0; ++r)
    for (int64_t j = 0; j < H; ++j) c_buf[r * blocks * L + j] = load_as<acc>(p.cx, r * H + j, p.dtype);
  std::vector<acc> h_raw(projecting ? B_pad * blocks * L : 0, acc(0));
  const std::vector<Visit> order = visits(p);
  acc* ws_base = static_cast<acc*>(out.workspace);
  const GateMath<acc> math{p.mode, H};
  const int threads = team_size(blocks);

#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
    const Range mine = share(blocks, thread, team);
    const Range my_cols = share(P_pad / (2 * L), thread, team);
    int cur = 0;
    for (const Visit& step : order) {
      const acc* h_prev = h_buf[cur].data();
      acc* h_next = projecting ? nullptr : h_buf[1 - cur].data();
      for (int64_t blk = mine.begin; blk < mine.end; ++blk) {
        const int64_t j0 = blk * L, n = std::min(L, H - j0);
        const acc* panel = panels.data() + blk * P * S * L;
        for (int64_t r0 = 0; r0 < step.size; r0 += R) {
          V c[R][S];
          for (int r = 0; r < R; ++r)
            for (int s = 0; s < S; ++s) c[r][s] = V{};
          tile_product<acc, R, S>(P, h_prev + r0 * P_pad, P_pad, panel, S * L, c);
          for (int r = 0; r < R && r0 + r < step.size; ++r) {
            const int64_t b = r0 + r, row = step.offset + b;
            V v[4] = {};
            for (int64_t g = 0; g < G; ++g) {
              v[g] = c[r][g] + load_acc(bias.data() + g * H + j0, n);
              const V x = load_part<acc>(p.x_proj, row * G * H + g * H + j0, n, p.dtype);
              if (p.mode == 1 && g == 2) {
                v[3] = x;  // GRU: x_n stays apart from h_n (the reset gate scales h_n only)
              } else {
                v[g] = v[g] + x;
              }
            }
            V cell = p.mode == 0 ? load_acc(c_buf.data() + b * blocks * L + j0, n) : V{};
            const V hp = p.mode == 1 ? load_acc(h_prev + b * P_pad + j0, n) : V{};
            acc* ws = ws_base ? ws_base + row * W + j0 : nullptr;
            const V h = math.apply(v, hp, cell, ws, n);
            if (p.mode == 0) store_acc(c_buf.data() + b * blocks * L + j0, n, cell);
            if (projecting) {
              store_acc(h_raw.data() + b * blocks * L + j0, n, h);
              if (ws) store_acc(ws + 5 * H, n, h);
            } else {
              store_acc(h_next + b * P_pad + j0, n, h);
              store_part<acc>(out.output, row * P + j0, n, h, p.dtype);
            }
          }
        }
        if (!projecting) {  // sequences that have ended (or not begun) carry their state
          for (int64_t b = step.size; b < B; ++b) std::memcpy(h_next + b * P_pad + j0, h_prev + b * P_pad + j0, n * sizeof(acc));
        }
      }
      if (projecting) {
#pragma omp barrier
        acc* h = h_buf[0].data();
        for (int64_t cb = my_cols.begin; cb < my_cols.end; ++cb) {
          const int64_t c0 = cb * 2 * L;
          block_product<acc>(step.size, H, h_raw.data(), blocks * L, w_hr_t.data(), P_pad, c0, h, P_pad, nullptr, 0);
          for (int64_t b = 0; b < step.size; ++b)
            for (int64_t j = c0; j < std::min(P, c0 + 2 * L); ++j)
              store_as<acc>(out.output, (step.offset + b) * P + j, h[b * P_pad + j], p.dtype);
        }
      } else {
        cur = 1 - cur;
      }
#pragma omp barrier
    }
    if (thread == 0) {
      const acc* h = h_buf[cur].data();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < P; ++j) store_as<acc>(out.hy, b * P + j, h[b * P_pad + j], p.dtype);
      for (int64_t b = 0; b < B && p.mode == 0; ++b)
        for (int64_t j = 0; j < H; ++j) store_as<acc>(out.cy, b * H + j, c_buf[b * blocks * L + j], p.dtype);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Pointwise backward of one row's vector of kL units (shared by the layer and the cell)
// ---------------------------------------------------------------------------------------------

template <typename acc>
struct GateBackward {
  using V = simd_t<acc>;
  int64_t mode, hidden;

  // dh: gradient of h' (LSTM: of o * tanh(c'), after the projection's backward); dc: of c'
  // (updated to the gradient of c_prev); ws: the row's workspace. Writes the gates' input-part
  // gradient d_x[g] and recurrent-part gradient d_rec[g]; returns the direct gradient of h_prev
  // (GRU: dh * z; zero otherwise).
  BIGKERN_ATTN_INLINE V apply(V dh, V& dc, const acc* ws, int64_t n, V c_prev, V h_prev, V* d_x, V* d_rec) const {
    const V one = vsplat(acc(1));
    if (mode == 0) {
      const V i = load_acc(ws, n), f = load_acc(ws + hidden, n), g = load_acc(ws + 2 * hidden, n);
      const V o = load_acc(ws + 3 * hidden, n), c1 = load_acc(ws + 4 * hidden, n);
      const V tc = tanh_v<acc>(c1);
      const V d_o = dh * tc;
      const V d_c = dc + dh * o * (one - tc * tc);
      d_x[0] = d_rec[0] = d_c * g * i * (one - i);
      d_x[1] = d_rec[1] = d_c * c_prev * f * (one - f);
      d_x[2] = d_rec[2] = d_c * i * (one - g * g);
      d_x[3] = d_rec[3] = d_o * o * (one - o);
      dc = d_c * f;
      return V{};
    }
    if (mode == 1) {
      const V r = load_acc(ws, n), z = load_acc(ws + hidden, n), nn = load_acc(ws + 2 * hidden, n);
      const V hn = load_acc(ws + 3 * hidden, n);
      const V d_pn = dh * (one - z) * (one - nn * nn);
      const V d_pz = dh * (h_prev - nn) * z * (one - z);
      const V d_pr = d_pn * hn * r * (one - r);
      d_x[0] = d_rec[0] = d_pr;
      d_x[1] = d_rec[1] = d_pz;
      d_x[2] = d_pn;
      d_rec[2] = d_pn * r;
      return dh * z;
    }
    const V h1 = load_acc(ws, n);
    d_x[0] = d_rec[0] = mode == 2 ? dh * (one - h1 * h1) : (h1 > V{} ? dh : V{});
    return V{};
  }
};

// ---------------------------------------------------------------------------------------------
// Layer backward
// ---------------------------------------------------------------------------------------------

template <typename acc>
void layer_backward_impl(const RnnProblem& p, const RnnBackwardIn& in, const RnnBackwardOut& out) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  const int64_t G = gate_count(p.mode), H = p.hidden, P = p.out_size, B = p.batch;
  const bool projecting = p.w_hr != nullptr;
  const int64_t blocks = (H + L - 1) / L, H_pad = blocks * L, B_pad = round_up(B, kRowPad);
  const int64_t P_pad = round_up(P, 2 * L), H_pad2 = round_up(H, 2 * L);
  const int64_t W = p.mode == 0 ? (projecting ? 6 : 5) * H : p.mode == 1 ? 4 * H : H;
  const std::vector<acc> w_hh = padded_matrix<acc>(p.w_hh, p.dtype, G * H, P, P_pad, false);
  const std::vector<acc> w_hr = projecting ? padded_matrix<acc>(p.w_hr, p.dtype, P, H, H_pad2, false) : std::vector<acc>();
  const std::vector<Visit> order = visits(p);
  const acc* ws_base = static_cast<const acc*>(in.workspace);
  acc* d_rec_base = static_cast<acc*>(out.d_rec);

  // Where each visit's previous state lives: the previous visit's row when the sequence was
  // live there, else the initial state.
  auto prev_row = [&](size_t visit, int64_t b) -> int64_t {
    if (visit == 0 || order[visit - 1].size <= b) return -1;
    return order[visit - 1].offset + b;
  };

  std::vector<acc> dh_carry(B_pad * P_pad, acc(0)), dc(p.mode == 0 ? B_pad * H_pad : 0, acc(0));
  for (int64_t b = 0; b < B && in.grad_hy; ++b)
    for (int64_t j = 0; j < P; ++j) dh_carry[b * P_pad + j] = load_as<acc>(in.grad_hy, b * P + j, p.dtype);
  for (int64_t b = 0; b < B && in.grad_cy; ++b)
    for (int64_t j = 0; j < H; ++j) dc[b * H_pad + j] = load_as<acc>(in.grad_cy, b * H + j, p.dtype);
  std::vector<acc> dh_total(projecting ? B_pad * P : 0, acc(0)), dh_raw(projecting ? B_pad * H_pad2 : 0, acc(0));
  std::vector<acc> direct(p.mode == 1 ? B_pad * P_pad : 0, acc(0));
  const GateBackward<acc> math{p.mode, H};
  const int threads = team_size(blocks);

#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num(), team = omp_get_num_threads();
    const Range mine = share(blocks, thread, team);
    const Range my_p = share(P_pad / (2 * L), thread, team);
    const Range my_h = share(H_pad2 / (2 * L), thread, team);
    for (size_t vi = order.size(); vi-- > 0;) {
      const Visit step = order[vi];
      const int64_t rows = step.size;
      if (projecting) {
        // dh of this step's output rows, then dh_raw = dh @ w_hr (each over owned columns).
        for (int64_t cb = my_p.begin; cb < my_p.end; ++cb) {
          for (int64_t b = 0; b < rows; ++b) {
            for (int64_t j = cb * 2 * L; j < std::min(P, (cb + 1) * 2 * L); ++j) {
              const acc d = load_as<acc>(in.grad_output, (step.offset + b) * P + j, p.dtype) + dh_carry[b * P_pad + j];
              dh_total[b * P + j] = d;
              static_cast<acc*>(out.dh_rows)[(step.offset + b) * P + j] = d;
            }
          }
        }
#pragma omp barrier
        for (int64_t cb = my_h.begin; cb < my_h.end; ++cb)
          block_product<acc>(rows, P, dh_total.data(), P, w_hr.data(), H_pad2, cb * 2 * L, dh_raw.data(), H_pad2, nullptr, 0);
#pragma omp barrier
      }
      for (int64_t blk = mine.begin; blk < mine.end; ++blk) {
        const int64_t j0 = blk * L, n = std::min(L, H - j0);
        for (int64_t b = 0; b < rows; ++b) {
          const int64_t row = step.offset + b, prev = prev_row(vi, b);
          V dh;
          if (projecting) {
            dh = load_acc(dh_raw.data() + b * H_pad2 + j0, n);
          } else {
            dh = load_part<acc>(in.grad_output, row * P + j0, n, p.dtype) + load_acc(dh_carry.data() + b * P_pad + j0, n);
          }
          V c_prev{}, h_prev{};
          if (p.mode == 0) {
            c_prev = prev >= 0 ? load_acc(ws_base + prev * W + 4 * H + j0, n) : load_part<acc>(p.cx, b * H + j0, n, p.dtype);
          }
          if (p.mode == 1) {
            h_prev = prev >= 0 ? load_part<acc>(in.output, prev * P + j0, n, p.dtype)
                               : load_part<acc>(p.hx, b * P + j0, n, p.dtype);
          }
          V cell_grad = p.mode == 0 ? load_acc(dc.data() + b * H_pad + j0, n) : V{};
          V d_x[4], d_rec[4];
          const V d_direct = math.apply(dh, cell_grad, ws_base + row * W + j0, n, c_prev, h_prev, d_x, d_rec);
          if (p.mode == 0) store_acc(dc.data() + b * H_pad + j0, n, cell_grad);
          if (p.mode == 1) store_acc(direct.data() + b * P_pad + j0, n, d_direct);
          for (int64_t g = 0; g < G; ++g) {
            store_part<acc>(out.grad_x, row * G * H + g * H + j0, n, d_x[g], p.dtype);
            store_acc(d_rec_base + row * G * H + g * H + j0, n, d_rec[g]);
          }
        }
      }
#pragma omp barrier
      // dh_prev = d_rec @ w_hh (+ GRU's direct term), over owned column blocks.
      for (int64_t cb = my_p.begin; cb < my_p.end; ++cb) {
        block_product<acc>(rows, G * H, d_rec_base + step.offset * G * H, G * H, w_hh.data(), P_pad, cb * 2 * L,
                           dh_carry.data(), P_pad, p.mode == 1 ? direct.data() : nullptr, P_pad);
      }
#pragma omp barrier
    }
    if (thread == 0) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < P; ++j) store_as<acc>(out.grad_hx, b * P + j, dh_carry[b * P_pad + j], p.dtype);
      for (int64_t b = 0; b < B && p.mode == 0; ++b)
        for (int64_t j = 0; j < H; ++j) store_as<acc>(out.grad_cx, b * H + j, dc[b * H_pad + j], p.dtype);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

// input @ w_ih^T and hx @ w_hh^T into one register tile of S slots per row. The GRU keeps the
// n gate's two parts apart: w_ih's n rows go to slot 3, w_hh's to slot 2 (S = 4).
template <typename acc, int S>
void cell_forward_impl(const RnnProblem& p, const RnnForwardOut& out) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  constexpr int R = rows_for_slots<S>();
  const int64_t G = gate_count(p.mode), H = p.hidden, I = p.input_size, B = p.batch;
  const int64_t blocks = (H + L - 1) / L, B_pad = round_up(B, kRowPad), W = p.mode == 0 ? 5 * H : p.mode == 1 ? 4 * H : H;
  const int ih_slots[4] = {0, 1, p.mode == 1 ? 3 : 2, 3}, hh_slots[4] = {0, 1, 2, 3};
  const std::vector<acc> panel_ih = pack_gate_panels<acc>(p.w_ih, p.dtype, G, H, I, S, ih_slots);
  const std::vector<acc> panel_hh = pack_gate_panels<acc>(p.w_hh, p.dtype, G, H, H, S, hh_slots);
  std::vector<acc> x(B_pad * I, acc(0)), h(B_pad * H, acc(0)), bias(S * blocks * L, acc(0));
  for (int64_t i = 0; i < B * I; ++i) x[i] = load_as<acc>(p.input, i, p.dtype);
  for (int64_t i = 0; i < B * H; ++i) h[i] = load_as<acc>(p.hx, i, p.dtype);
  for (int64_t g = 0; g < G && p.b_ih; ++g) {
    for (int64_t j = 0; j < H; ++j) {
      bias[ih_slots[g] * blocks * L + j] += load_as<acc>(p.b_ih, g * H + j, p.dtype);
      bias[hh_slots[g] * blocks * L + j] += load_as<acc>(p.b_hh, g * H + j, p.dtype);
    }
  }
  const GateMath<acc> math{p.mode, H};
  acc* ws_base = static_cast<acc*>(out.workspace);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t j0 = blk * L, n = std::min(L, H - j0);
      for (int64_t r0 = 0; r0 < B; r0 += R) {
        V c[R][S];
        for (int r = 0; r < R; ++r)
          for (int s = 0; s < S; ++s) c[r][s] = V{};
        tile_product<acc, R, S>(I, x.data() + r0 * I, I, panel_ih.data() + blk * I * S * L, S * L, c);
        tile_product<acc, R, S>(H, h.data() + r0 * H, H, panel_hh.data() + blk * H * S * L, S * L, c);
        for (int r = 0; r < R && r0 + r < B; ++r) {
          const int64_t b = r0 + r;
          V v[4] = {};
          for (int s = 0; s < S; ++s) v[s] = c[r][s] + load_acc(bias.data() + s * blocks * L + j0, n);
          V cell = p.mode == 0 ? load_part<acc>(p.cx, b * H + j0, n, p.dtype) : V{};
          const V hp = load_acc(h.data() + b * H + j0, n);
          const V h1 = math.apply(v, hp, cell, ws_base ? ws_base + b * W + j0 : nullptr, n);
          store_part<acc>(out.output, b * H + j0, n, h1, p.dtype);
          if (p.mode == 0) store_part<acc>(out.cy, b * H + j0, n, cell, p.dtype);
        }
      }
    }
  });
}

// Gate gradients of a cell: d_x (dtype), d_rec (acc), the direct part of grad_hx (acc, GRU) and
// grad_cx; rnn.cpp multiplies them into the input, state and weight gradients.
template <typename acc>
void cell_backward_impl(const RnnProblem& p, const RnnBackwardIn& in, const RnnBackwardOut& out) {
  using V = simd_t<acc>;
  constexpr int64_t L = Simd<acc>::kLanes;
  const int64_t G = gate_count(p.mode), H = p.hidden, B = p.batch, blocks = (H + L - 1) / L;
  const int64_t W = p.mode == 0 ? 5 * H : p.mode == 1 ? 4 * H : H;
  const GateBackward<acc> math{p.mode, H};
  const acc* ws = static_cast<const acc*>(in.workspace);
  at::parallel_for(0, B, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t b = r0; b < r1; ++b) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * L, n = std::min(L, H - j0);
        const V dh = load_part<acc>(in.grad_output, b * H + j0, n, p.dtype);
        V dc = p.mode == 0 && in.grad_cy ? load_part<acc>(in.grad_cy, b * H + j0, n, p.dtype) : V{};
        const V c_prev = p.mode == 0 ? load_part<acc>(p.cx, b * H + j0, n, p.dtype) : V{};
        const V h_prev = p.mode == 1 ? load_part<acc>(p.hx, b * H + j0, n, p.dtype) : V{};
        V d_x[4], d_rec[4];
        const V d_direct = math.apply(dh, dc, ws + b * W + j0, n, c_prev, h_prev, d_x, d_rec);
        for (int64_t g = 0; g < G; ++g) {
          store_part<acc>(out.grad_x, b * G * H + g * H + j0, n, d_x[g], p.dtype);
          store_acc(static_cast<acc*>(out.d_rec) + b * G * H + g * H + j0, n, d_rec[g]);
        }
        store_acc(static_cast<acc*>(out.grad_hx) + b * H + j0, n, d_direct);
        if (p.mode == 0) store_part<acc>(out.grad_cx, b * H + j0, n, dc, p.dtype);
      }
    }
  });
}

template <typename acc>
void layer_forward_dispatch(const RnnProblem& p, const RnnForwardOut& out) {
  switch (gate_count(p.mode)) {
    case 4: return layer_forward_impl<acc, 4>(p, out);
    case 3: return layer_forward_impl<acc, 3>(p, out);
    default: return layer_forward_impl<acc, 1>(p, out);
  }
}

template <typename acc>
void cell_forward_dispatch(const RnnProblem& p, const RnnForwardOut& out) {
  if (p.mode == 0 || p.mode == 1) return cell_forward_impl<acc, 4>(p, out);
  return cell_forward_impl<acc, 1>(p, out);
}

}  // namespace rnn_detail

inline bool rnn_is_double(const RnnProblem& p) { return p.dtype == c10::ScalarType::Double; }

const RnnKernelTable& rnn_kernels() {
  static const RnnKernelTable table = {
      [](const RnnProblem& p, const RnnForwardOut& o) {
        rnn_is_double(p) ? rnn_detail::layer_forward_dispatch<double>(p, o) : rnn_detail::layer_forward_dispatch<float>(p, o);
      },
      [](const RnnProblem& p, const RnnBackwardIn& i, const RnnBackwardOut& o) {
        rnn_is_double(p) ? rnn_detail::layer_backward_impl<double>(p, i, o) : rnn_detail::layer_backward_impl<float>(p, i, o);
      },
      [](const RnnProblem& p, const RnnForwardOut& o) {
        rnn_is_double(p) ? rnn_detail::cell_forward_dispatch<double>(p, o) : rnn_detail::cell_forward_dispatch<float>(p, o);
      },
      [](const RnnProblem& p, const RnnBackwardIn& i, const RnnBackwardOut& o) {
        rnn_is_double(p) ? rnn_detail::cell_backward_impl<double>(p, i, o) : rnn_detail::cell_backward_impl<float>(p, i, o);
      },
  };
  return table;
}
