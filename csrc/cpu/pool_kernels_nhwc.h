// Channels-last (NHWC) forward kernels. Part of pool_kernels.h (same namespace and target).
//
// Each output position first lists its valid window taps (offsets of their channel vectors and
// their plane positions), then reduces them block by block of channels. A block's accumulators
// are a fixed-size local array, so they stay in vector registers across all taps instead of
// making a round trip through memory per tap; only the last, partial block has a runtime length.

constexpr int64_t kChannelBlock = 64;
using FullBlock = std::integral_constant<int64_t, kChannelBlock>;
constexpr int64_t kVectorsPerBlock = kChannelBlock / kLanes;

// The valid taps of one output position, in row-major window order (the order max must scan).
class Taps {
 public:
  explicit Taps(int64_t capacity) : offset_(capacity), position_(capacity) {}
  void clear() { count_ = 0; }
  void add(int64_t ih, int64_t iw, int64_t W, int64_t C) {
    position_[count_] = ih * W + iw;
    offset_[count_] = (ih * W + iw) * C;
    ++count_;
  }
  int64_t count() const { return count_; }
  const int64_t* offsets() const { return offset_.data(); }
  const int64_t* positions() const { return position_.data(); }

 private:
  std::vector<int64_t> offset_, position_;
  int64_t count_ = 0;
};

// Calls body(c0, count) for each block of channels; count is a compile-time constant for full blocks.
template <typename Body>
inline void for_each_channel_block(int64_t C, Body&& body) {
  int64_t c0 = 0;
  for (; c0 + kChannelBlock <= C; c0 += kChannelBlock) body(c0, FullBlock());
  if (c0 < C) body(c0, C - c0);
}

// Full float32 blocks use explicit vectors (GCC/Clang vector extensions, lowered to AVX2 or SSE
// by the file's target): the compiler's auto-vectoriser gives up on these select-heavy loops
// once it has fully unrolled them. Indices are tracked as the winning tap's number (int32
// lanes, beside the float lanes) and turned into plane positions once, at the end.
template <bool kWriteIndices>
inline void max_over_taps_f32(const float* __restrict__ image, const Taps& taps, int64_t first_position, int64_t c0,
                              float* __restrict__ dst, int64_t* __restrict__ dst_index) {
  f32v best[kVectorsPerBlock];
  i32v best_tap[kVectorsPerBlock];
  for (int64_t k = 0; k < kVectorsPerBlock; ++k) {
    best[k] = splat_f32v(-std::numeric_limits<float>::infinity());
    best_tap[k] = splat_i32v(-1);  // no tap taken yet: the index stays first_position
  }
  const int64_t n_taps = taps.count();
  const int64_t* offsets = taps.offsets();
  for (int64_t t = 0; t < n_taps; ++t) {
    const float* src = image + offsets[t] + c0;
    const i32v tap = splat_i32v(static_cast<int32_t>(t));
    for (int64_t k = 0; k < kVectorsPerBlock; ++k) {
      const f32v v = load_f32v(src + kLanes * k);
      const i32v take = (v > best[k]) | (v != v);
      best[k] = take ? v : best[k];
      if constexpr (kWriteIndices) best_tap[k] = take ? tap : best_tap[k];
    }
  }
  for (int64_t k = 0; k < kVectorsPerBlock; ++k) store_f32v(dst + c0 + kLanes * k, best[k]);
  if constexpr (kWriteIndices) {
    const int64_t* positions = taps.positions();
    for (int64_t k = 0; k < kVectorsPerBlock; ++k)
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        const int32_t tap = best_tap[k][lane];
        dst_index[c0 + kLanes * k + lane] = tap < 0 ? first_position : positions[tap];
      }
  }
}

inline void mean_over_taps_f32(const float* __restrict__ image, const Taps& taps, int64_t c0, float divisor,
                               float* __restrict__ dst) {
  f32v sum[kVectorsPerBlock];
  for (int64_t k = 0; k < kVectorsPerBlock; ++k) sum[k] = splat_f32v(0.f);
  const int64_t n_taps = taps.count();
  const int64_t* offsets = taps.offsets();
  for (int64_t t = 0; t < n_taps; ++t) {
    const float* src = image + offsets[t] + c0;
    for (int64_t k = 0; k < kVectorsPerBlock; ++k) sum[k] += load_f32v(src + kLanes * k);
  }
  const f32v d = splat_f32v(divisor);
  for (int64_t k = 0; k < kVectorsPerBlock; ++k) store_f32v(dst + c0 + kLanes * k, sum[k] / d);
}

// Max over the taps for channels [c0, c0 + count) of one output position. The index starts at
// first_position, torch's first in-bounds tap position: with dilation a window can lie wholly
// in the padding (no taps at all), and then torch reports -inf at that (out-of-plane) position.
template <typename scalar_t, bool kWriteIndices, typename Count>
inline void max_over_taps(const scalar_t* __restrict__ image, const Taps& taps, int64_t first_position, int64_t c0,
                          Count count, scalar_t* __restrict__ dst, int64_t* __restrict__ dst_index) {
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<Count, FullBlock>) {
    max_over_taps_f32<kWriteIndices>(image, taps, first_position, c0, dst, dst_index);
    return;
  }
  using acc = acc_t<scalar_t>;
  acc best[kChannelBlock];
  int64_t best_position[kChannelBlock];
  const int64_t n_taps = taps.count();
  const int64_t* offsets = taps.offsets();
  const int64_t* positions = taps.positions();
  for (int64_t i = 0; i < count; ++i) best[i] = -std::numeric_limits<acc>::infinity();
  if constexpr (kWriteIndices)
    for (int64_t i = 0; i < count; ++i) best_position[i] = first_position;
  for (int64_t t = 0; t < n_taps; ++t) {
    const scalar_t* __restrict__ src = image + offsets[t] + c0;
    if constexpr (kWriteIndices) {
      const int64_t here = positions[t];
      for (int64_t i = 0; i < count; ++i) {
        const acc v = static_cast<acc>(src[i]);
        const bool take = max_takes(v, best[i]);
        best[i] = take ? v : best[i];
        best_position[i] = take ? here : best_position[i];
      }
    } else {
      for (int64_t i = 0; i < count; ++i) {
        const acc v = static_cast<acc>(src[i]);
        best[i] = max_takes(v, best[i]) ? v : best[i];
      }
    }
  }
  for (int64_t i = 0; i < count; ++i) dst[c0 + i] = static_cast<scalar_t>(best[i]);
  if constexpr (kWriteIndices)
    for (int64_t i = 0; i < count; ++i) dst_index[c0 + i] = best_position[i];
}

// Sum over the taps divided by `divisor`, for channels [c0, c0 + count) of one output position.
template <typename scalar_t, typename Count>
inline void mean_over_taps(const scalar_t* __restrict__ image, const Taps& taps, int64_t c0, Count count,
                           acc_t<scalar_t> divisor, scalar_t* __restrict__ dst) {
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<Count, FullBlock>) {
    mean_over_taps_f32(image, taps, c0, divisor, dst);
    return;
  }
  using acc = acc_t<scalar_t>;
  acc sum[kChannelBlock];
  const int64_t n_taps = taps.count();
  const int64_t* offsets = taps.offsets();
  for (int64_t i = 0; i < count; ++i) sum[i] = acc(0);
  for (int64_t t = 0; t < n_taps; ++t) {
    const scalar_t* __restrict__ src = image + offsets[t] + c0;
    for (int64_t i = 0; i < count; ++i) sum[i] += static_cast<acc>(src[i]);
  }
  for (int64_t i = 0; i < count; ++i) dst[c0 + i] = static_cast<scalar_t>(sum[i] / divisor);
}

// Runs per_position(taps, n, oh, ow, pos) for every output position, with a tap list owned by
// the task. Tasks own whole output rows, so no position is decoded by division (three 64-bit
// divisions per position cost about as much as reducing a 3x3 window).
template <typename PerPosition>
inline void for_each_output_row(const Pool2dGeometry& g, int64_t max_taps, PerPosition&& per_position) {
  at::parallel_for(0, g.N * g.OH, grain_for(g.C * max_taps * g.OW), [&](int64_t begin, int64_t end) {
    Taps taps(max_taps);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.OH, oh = row % g.OH;
      for (int64_t ow = 0; ow < g.OW; ++ow) per_position(taps, n, oh, ow, row * g.OW + ow);
    }
  });
}

template <typename scalar_t, bool kWriteIndices>
void max_pool2d_nhwc(const scalar_t* in, scalar_t* out, int64_t* indices, const Pool2dGeometry& g) {
  const int64_t C = g.C, image_size = g.H * g.W * C;
  for_each_output_row(g, g.kh * g.kw, [&](Taps& taps, int64_t n, int64_t oh, int64_t ow, int64_t pos) {
    taps.clear();
    const int64_t hstart = oh * g.sh - g.ph, wstart = ow * g.sw - g.pw;
    for (int64_t kh = 0; kh < g.kh; ++kh) {
      const int64_t ih = hstart + kh * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      for (int64_t kw = 0; kw < g.kw; ++kw) {
        const int64_t iw = wstart + kw * g.dw;
        if (iw >= 0 && iw < g.W) taps.add(ih, iw, g.W, C);
      }
    }
    int64_t* dst_index = kWriteIndices ? indices + pos * C : nullptr;
    const int64_t first_position = first_valid(hstart, g.dh) * g.W + first_valid(wstart, g.dw);
    for_each_channel_block(C, [&](int64_t c0, auto count) {
      max_over_taps<scalar_t, kWriteIndices>(in + n * image_size, taps, first_position, c0, count, out + pos * C,
                                             dst_index);
    });
  });
}

template <typename scalar_t>
void avg_pool2d_nhwc(const scalar_t* in, scalar_t* out, const Pool2dGeometry& g, bool count_include_pad,
                     std::optional<int64_t> divisor_override) {
  using acc = acc_t<scalar_t>;
  const int64_t C = g.C, image_size = g.H * g.W * C;
  for_each_output_row(g, g.kh * g.kw, [&](Taps& taps, int64_t n, int64_t oh, int64_t ow, int64_t pos) {
    const AvgWindow wh = avg_window(oh, g.sh, g.ph, g.kh, g.H);
    const AvgWindow ww = avg_window(ow, g.sw, g.pw, g.kw, g.W);
    scalar_t* dst = out + pos * C;
    if (wh.start >= wh.end || ww.start >= ww.end) {
      std::fill(dst, dst + C, scalar_t(0));
      return;
    }
    taps.clear();
    for (int64_t ih = wh.start; ih < wh.end; ++ih)
      for (int64_t iw = ww.start; iw < ww.end; ++iw) taps.add(ih, iw, g.W, C);
    const acc divisor = static_cast<acc>(avg_divisor(wh, ww, count_include_pad, divisor_override));
    for_each_channel_block(C, [&](int64_t c0, auto count) {
      mean_over_taps<scalar_t>(in + n * image_size, taps, c0, count, divisor, dst);
    });
  });
}

template <typename scalar_t, bool kIsMax, bool kWriteIndices>
void adaptive_pool2d_nhwc(const scalar_t* in, scalar_t* out, int64_t* indices, const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t C = g.C, image_size = g.H * g.W * C;
  const int64_t max_window = (g.H / g.OH + 2) * (g.W / g.OW + 2);
  for_each_output_row(g, max_window, [&](Taps& taps, int64_t n, int64_t oh, int64_t ow, int64_t pos) {
    const int64_t h0 = adaptive_start(oh, g.H, g.OH), h1 = adaptive_end(oh, g.H, g.OH);
    const int64_t w0 = adaptive_start(ow, g.W, g.OW), w1 = adaptive_end(ow, g.W, g.OW);
    taps.clear();
    for (int64_t ih = h0; ih < h1; ++ih)
      for (int64_t iw = w0; iw < w1; ++iw) taps.add(ih, iw, g.W, C);
    scalar_t* dst = out + pos * C;
    for_each_channel_block(C, [&](int64_t c0, auto count) {
      if constexpr (kIsMax) {
        max_over_taps<scalar_t, kWriteIndices>(in + n * image_size, taps, h0 * g.W + w0, c0, count, dst,
                                               kWriteIndices ? indices + pos * C : nullptr);
      } else {
        mean_over_taps<scalar_t>(in + n * image_size, taps, c0, count, static_cast<acc>((h1 - h0) * (w1 - w0)), dst);
      }
    });
  });
}
