// The forward of layers with few input channels (a network's first layer: direct_rows_conv in
// conv_kernel_table.h) when the input's pixels are contiguous along a row (NCHW, or one channel):
// vectors run along the output row instead of over channels. Included by conv_kernels.h.
//
// The implicit GEMM's tiles are vectors of output channels; a 6-channel LeNet layer fills 6 of
// their 16 lanes and gathers each pixel's R x S x C receptive field into a patch row first, which
// made its forward 6x slower than torch's (1.3 against 0.2 ms for 64 x 1 x 28 x 28 -> 6, 5x5).
// Here a register block holds kDirectChannels output channels x kDirectVectors vectors of
// consecutive output pixels of one row; each (channel, kernel row, kernel column) step loads the
// input row's vectors once, shifted by the column, and multiplies them by one broadcast weight
// per output channel. The input rows a work item (an output row) reads are first copied into
// zero-padded rows, so padding and the row's end need no masks; stride and dilation vertically
// select which rows, dilation horizontally is the shift. The epilogue (bias, residual, pre-
// activation, activation) runs on the vectors and stores them along the output row.

#if BIGKERN_ATTN_VECTOR_BYTES == 64
constexpr int kDirectChannels = 8;  // 8 x 2 accumulators, 2 input vectors, a broadcast: 19 of 32
#else
constexpr int kDirectChannels = 4;  // 4 x 2 accumulators, 2 input vectors, a broadcast: 11 of 16
#endif
constexpr int kDirectVectors = 2;

// Copies the input rows that output rows [p_first, p_end) of image n read into `rows`
// ([channel][band row][row_len]: `left` zeros, the row, zeros to row_len); band row 0 is input
// row p_first * stride - top. Rows in the vertical padding are not written: no tap reads them.
template <typename T>
void copy_band_rows(const ConvShape& s, const Strided& x, int64_t n, int64_t p_first, int64_t p_end, int64_t band_rows,
                    int64_t row_len, T* rows) {
  const T* xd = static_cast<const T*>(x.data);
  const int64_t ih_first = p_first * s.stride_h - s.pad_top;
  const int64_t ih_last = (p_end - 1) * s.stride_h - s.pad_top + (s.R - 1) * s.dilation_h;
  const int64_t lead = std::min(s.pad_left, row_len), body = std::clamp<int64_t>(row_len - lead, 0, s.W);
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t ih = std::max<int64_t>(ih_first, 0); ih <= std::min(ih_last, s.H - 1); ++ih) {
      T* row = rows + (c * band_rows + ih - ih_first) * row_len;
      std::fill_n(row, lead, T(0));
      std::copy_n(xd + n * x.sn + c * x.sc + ih * x.sh, body, row + lead);
      std::fill(row + lead + body, row + row_len, T(0));
    }
}

template <typename T>
void direct_rows_forward(const ConvShape& s, const Strided& x, const T* w, const Epilogue<T>& e) {
  constexpr int64_t L = kLanes<T>, KB = kDirectChannels, QV = kDirectVectors;
  const int64_t RS = s.R * s.S, k_blocks = ceil_div(s.K, KB);
  const int64_t row_len = ceil_div(s.Q, QV * L) * QV * L + (s.S - 1) * s.dilation_w;
  // Weights as [k block][c][r][s][KB], zero past K: one step's broadcasts are adjacent.
  std::vector<T> packed(static_cast<size_t>(k_blocks * s.C * RS * KB), T(0));
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t t = 0; t < RS; ++t) packed[((k / KB * s.C + c) * RS + t) * KB + k % KB] = w[(k * s.C + c) * RS + t];
  // Work items: bands of kBand output rows of one image; the input rows a band reads are copied
  // once per band (rows of consecutive output rows overlap by R - 1 at stride 1).
  constexpr int64_t kBand = 8;
  const int64_t bands = ceil_div(s.P, kBand), items = s.N * bands, team = std::min(worker_count(), items);
  const int64_t band_rows = (kBand - 1) * s.stride_h + (s.R - 1) * s.dilation_h + 1;  // input rows per band
  T* out = static_cast<T*>(e.out.data);
  const T* res = static_cast<const T*>(e.residual.data);
  T* pre = static_cast<T*>(e.preact.data);
#pragma omp parallel num_threads(team) if (team > 1)
  {
    std::vector<T> rows(static_cast<size_t>(s.C * band_rows * row_len));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / bands, p_first = item % bands * kBand, p_end = std::min(s.P, p_first + kBand);
      const int64_t ih_first = p_first * s.stride_h - s.pad_top;  // input row of band row 0
      copy_band_rows(s, x, n, p_first, p_end, band_rows, row_len, rows.data());
      for (int64_t p = p_first; p < p_end; ++p)
        for (int64_t kb0 = 0; kb0 < k_blocks; ++kb0)
          for (int64_t q0 = 0; q0 < s.Q; q0 += QV * L) {
            simd_t<T> acc[KB][QV] = {};
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r) {
                const int64_t ih = p * s.stride_h - s.pad_top + r * s.dilation_h;
                if (ih < 0 || ih >= s.H) continue;  // a padding row: zeros
                const T* row = rows.data() + (c * band_rows + ih - ih_first) * row_len + q0;
                const T* wt = packed.data() + ((kb0 * s.C + c) * RS + r * s.S) * KB;
                for (int64_t sx = 0; sx < s.S; ++sx, wt += KB) {
                  simd_t<T> xv[QV];
                  for (int v = 0; v < QV; ++v) xv[v] = vload(row + sx * s.dilation_w + v * L);
                  for (int kb = 0; kb < KB; ++kb) {
                    const simd_t<T> wv = vsplat(wt[kb]);
                    for (int v = 0; v < QV; ++v) acc[kb][v] += wv * xv[v];
                  }
                }
              }
            for (int kb = 0; kb < KB && kb0 * KB + kb < s.K; ++kb) {
              const int64_t k = kb0 * KB + kb;
              const T bias = e.bias ? e.bias[k] : T(0);
              for (int v = 0; v < QV; ++v) {
                const int64_t q = q0 + v * L, count = std::min<int64_t>(L, s.Q - q);
                if (count <= 0) break;
                const int64_t at_out = pixel_offset(e.out, n, p, q) + k * e.out.sc;
                const int64_t at_res = pixel_offset(e.residual, n, p, q) + k * e.residual.sc;
                const int64_t at_pre = pixel_offset(e.preact, n, p, q) + k * e.preact.sc;
                simd_t<T> z = acc[kb][v] + vsplat(bias);
                const bool whole = count == L;
                if (res != nullptr) {
                  if (whole && e.residual.sw == 1) z += vload(res + at_res);
                  else
                    for (int64_t j = 0; j < count; ++j) z[j] += res[at_res + j * e.residual.sw];
                }
                if (pre != nullptr) {
                  if (whole && e.preact.sw == 1) vstore(pre + at_pre, z);
                  else
                    for (int64_t j = 0; j < count; ++j) pre[at_pre + j * e.preact.sw] = z[j];
                }
                if (e.activation == 1) z = z < simd_t<T>{} ? simd_t<T>{} : z;
                else if (e.activation == 3) z = z * sigmoid_v<T>(z);
                else if (e.activation == 2)
                  for (int64_t j = 0; j < L; ++j) z[j] = activate(z[j], 2);
                if (whole && e.out.sw == 1) vstore(out + at_out, z);
                else
                  for (int64_t j = 0; j < count; ++j) out[at_out + j * e.out.sw] = z[j];
              }
            }
          }
    }
  }
}

// The weight and bias gradients of the same layers, when the input gradient is not wanted (a
// first layer's input needs none) and input, output gradient and activation input have rows of
// contiguous pixels: dW[k][c][r][s] = sum over n, p, q of gz[n][k][p][q] * x[n][c][p*sh - top +
// r*dil][q - left + s*dil], gz the output gradient times the activation's slope. A work item (a
// band of output rows of one image) first writes its gz rows, zero past the row's last pixel, and
// its padded input rows; then for each (channel, kernel row, kernel column) and block of output
// channels the register block sums gz row vectors times the shifted input row vectors over the
// band, and adds them to the thread's lane-wise partial dW. The partials are reduced (threads in
// order, then lanes) at the end: deterministic for a given thread count.
template <typename T>
void direct_rows_weight_gradient(const ConvShape& s, const ConvBackwardArgs& a) {
  constexpr int64_t L = kLanes<T>, KB = kDirectChannels, QV = kDirectVectors;
  constexpr int64_t kBand = 8;
  const int64_t RS = s.R * s.S, k_blocks = ceil_div(s.K, KB), q_len = ceil_div(s.Q, QV * L) * QV * L;
  const int64_t row_len = q_len + (s.S - 1) * s.dilation_w;
  const int64_t band_rows = (kBand - 1) * s.stride_h + (s.R - 1) * s.dilation_h + 1;
  const int64_t bands = ceil_div(s.P, kBand), items = s.N * bands, team = std::min(worker_count(), items);
  const Strided& x = a.input_rows;
  const Strided& go = a.grad_output_rows;
  const Strided& act = a.activation_rows;
  const T* god = static_cast<const T*>(go.data);
  const T* actd = static_cast<const T*>(act.data);
  // Per thread: [k block][c][tap][KB] vectors of lane sums, then K bias lane sums.
  const int64_t weight_vectors = k_blocks * s.C * RS * KB, per_thread = (weight_vectors + k_blocks * KB) * L;
  std::vector<T> partial(static_cast<size_t>(team * per_thread), T(0));
#pragma omp parallel num_threads(team) if (team > 1)
  {
    std::vector<T> rows(static_cast<size_t>(s.C * band_rows * row_len));
    std::vector<T> grads(static_cast<size_t>(k_blocks * KB * kBand * q_len), T(0));  // [k][band row][q]
    T* mine = partial.data() + omp_get_thread_num() * per_thread;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / bands, p_first = item % bands * kBand, p_end = std::min(s.P, p_first + kBand);
      const int64_t ih_first = p_first * s.stride_h - s.pad_top;
      copy_band_rows(s, x, n, p_first, p_end, band_rows, row_len, rows.data());
      for (int64_t k = 0; k < s.K; ++k) {
        simd_t<T> bias_sum{};
        for (int64_t p = p_first; p < p_end; ++p) {
          T* g = grads.data() + (k * kBand + p - p_first) * q_len;
          const T* from = god + n * go.sn + k * go.sc + p * go.sh;
          const T* z = actd ? actd + n * act.sn + k * act.sc + p * act.sh : nullptr;
          for (int64_t q = 0; q < s.Q; q += L) {  // whole vectors; the row's tail through a copy
            const int64_t count = std::min(L, s.Q - q);
            alignas(64) T go_lanes[L] = {}, z_lanes[L] = {};
            std::copy_n(from + q, count, go_lanes);
            if (z != nullptr) std::copy_n(z + q, count, z_lanes);
            const simd_t<T> gv = vload(go_lanes), zv = vload(z_lanes);
            simd_t<T> out = gv;
            if (a.activation == 1) {  // relu: where the output is positive
              out = zv > simd_t<T>{} ? gv : simd_t<T>{};
            } else if (a.activation == 3) {  // silu: sigmoid(z) * (1 + z * (1 - sigmoid(z)))
              const simd_t<T> sig = sigmoid_v<T>(zv);
              out = gv * (sig * (vsplat(T(1)) + zv * (vsplat(T(1)) - sig)));
            } else if (a.activation == 2) {
              for (int64_t j = 0; j < count; ++j) out[j] = go_lanes[j] * activation_slope(z_lanes[j], 2);
            }
            std::copy_n(reinterpret_cast<const T*>(&out), count, g + q);
          }
          for (int64_t q = 0; q < q_len; q += L) bias_sum += vload(g + q);  // lanes past Q stay zero
        }
        T* bias_lanes = mine + weight_vectors * L + k * L;
        vstore(bias_lanes, vload(bias_lanes) + bias_sum);
      }
      for (int64_t kb0 = 0; kb0 < k_blocks; ++kb0)
        for (int64_t c = 0; c < s.C; ++c)
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t sx = 0; sx < s.S; ++sx) {
              simd_t<T> acc[KB][QV] = {};
              for (int64_t p = p_first; p < p_end; ++p) {
                const int64_t ih = p * s.stride_h - s.pad_top + r * s.dilation_h;
                if (ih < 0 || ih >= s.H) continue;
                const T* row = rows.data() + (c * band_rows + ih - ih_first) * row_len + sx * s.dilation_w;
                const T* g = grads.data() + (kb0 * KB * kBand + p - p_first) * q_len;
                for (int64_t q0 = 0; q0 < q_len; q0 += QV * L) {
                  simd_t<T> xv[QV];
                  for (int v = 0; v < QV; ++v) xv[v] = vload(row + q0 + v * L);
                  for (int kb = 0; kb < KB; ++kb)
                    for (int v = 0; v < QV; ++v) acc[kb][v] += vload(g + kb * kBand * q_len + q0 + v * L) * xv[v];
                }
              }
              T* sums = mine + (((kb0 * s.C + c) * RS + r * s.S + sx) * KB) * L;
              for (int kb = 0; kb < KB; ++kb) {
                simd_t<T> total = vload(sums + kb * L);
                for (int v = 0; v < QV; ++v) total += acc[kb][v];
                vstore(sums + kb * L, total);
              }
            }
    }
  }
  T* dw = static_cast<T*>(a.grad_weight);
  T* db = static_cast<T*>(a.grad_bias);
  for (int64_t k = 0; k < s.K; ++k) {
    for (int64_t c = 0; c < s.C && dw != nullptr; ++c)
      for (int64_t tap = 0; tap < RS; ++tap) {
        T sum = 0;
        for (int64_t t = 0; t < team; ++t)
          for (int64_t lane = 0; lane < L; ++lane)
            sum += partial[t * per_thread + (((k / KB * s.C + c) * RS + tap) * KB + k % KB) * L + lane];
        dw[(k * s.C + c) * RS + tap] = sum;
      }
    if (db == nullptr) continue;
    T sum = 0;
    for (int64_t t = 0; t < team; ++t)
      for (int64_t lane = 0; lane < L; ++lane) sum += partial[t * per_thread + weight_vectors * L + k * L + lane];
    db[k] = sum;
  }
}
