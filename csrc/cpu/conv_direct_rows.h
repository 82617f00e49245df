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

template <typename T>
void direct_rows_forward(const ConvShape& s, const Strided& x, const T* w, const Epilogue<T>& e) {
  constexpr int64_t L = kLanes<T>, KB = kDirectChannels, QV = kDirectVectors;
  const T* xd = static_cast<const T*>(x.data);
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
      const int64_t ih_last = (p_end - 1) * s.stride_h - s.pad_top + (s.R - 1) * s.dilation_h;
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t ih = std::max<int64_t>(ih_first, 0); ih <= std::min(ih_last, s.H - 1); ++ih) {
          T* row = rows.data() + (c * band_rows + ih - ih_first) * row_len;
          const int64_t lead = std::min(s.pad_left, row_len), body = std::clamp<int64_t>(row_len - lead, 0, s.W);
          std::fill_n(row, lead, T(0));
          std::copy_n(xd + n * x.sn + c * x.sc + ih * x.sh, body, row + lead);
          std::fill(row + lead + body, row + row_len, T(0));
        }
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
