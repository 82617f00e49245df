// CPU pooling kernels, written once and compiled once per instruction set.
//
// This header is included by pool_kernels_<isa>.cpp inside `namespace bigkern::cpu::<isa>`
// after that file has switched the compiler's target (e.g. AVX2+FMA). The inner loops are plain
// C++ over contiguous memory, shaped so the compiler vectorises them for the target:
//   * NCHW: for one output row, each window tap updates a whole row of accumulators
//     (best[ow] / sum[ow]); the tap's valid ow range is computed up front, so the loop has no
//     bounds branches and padding costs nothing.
//   * NHWC (channels_last, pool_kernels_nhwc.h): for one output position, blocks of channels
//     are reduced over the window's taps in register-resident accumulators.
// Max uses `take = v > best || v != v`, scanning taps row-major, which is torch's rule: NaN
// propagates (the last NaN's index wins) and ties keep the first maximum.
//
// Backward passes scatter within one (n, c) plane or one image, each owned by a single task,
// so they need no atomics and are deterministic.
//
// The including file must have included the headers listed in pool_kernels_includes.h.

template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return a <= 0 ? -((-a) / b) : (a + b - 1) / b; }

// First tap position >= 0 of a window starting at `start` with step `dil`.
inline int64_t first_valid(int64_t start, int64_t dil) {
  return start >= 0 ? start : start + ceil_div_nonneg(-start, dil) * dil;
}

// Outputs o in [lo, hi) read position o*stride + offset inside [0, size).
inline void valid_output_range(int64_t offset, int64_t stride, int64_t size, int64_t n_out, int64_t& lo,
                               int64_t& hi) {
  lo = std::max<int64_t>(0, ceil_div_nonneg(-offset, stride));
  hi = std::min<int64_t>(n_out, offset > size - 1 ? 0 : (size - 1 - offset) / stride + 1);
}

inline int64_t adaptive_start(int64_t o, int64_t in, int64_t out) { return (o * in) / out; }
inline int64_t adaptive_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }

// Tasks below ~32K elements of work are not worth a thread hand-off.
constexpr int64_t kGrainElements = 32768;
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_item));
}

// Bitwise `|` (not `||`) keeps the select branch-free, so it vectorises.
template <typename T>
inline bool max_takes(T v, T best) {
  return (v > best) | (v != v);
}

// One window tap applied to n max accumulators: candidate i is src[i * step]. Parameters are
// by value so the compiler can prove the int64 index stores alias none of them and vectorise.
template <typename scalar_t, typename acc>
inline void max_tap(const scalar_t* __restrict__ src, int64_t step, acc* __restrict__ best, int64_t n) {
  if (step == 1) {
    for (int64_t i = 0; i < n; ++i) {
      const acc v = static_cast<acc>(src[i]);
      best[i] = max_takes(v, best[i]) ? v : best[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const acc v = static_cast<acc>(src[i * step]);
      best[i] = max_takes(v, best[i]) ? v : best[i];
    }
  }
}

// As max_tap, also recording the winner's plane position first_pos + i * pos_step.
template <typename scalar_t, typename acc>
inline void max_tap_indexed(const scalar_t* __restrict__ src, int64_t step, acc* __restrict__ best,
                            int64_t* __restrict__ best_index, int64_t n, int64_t first_pos, int64_t pos_step) {
  for (int64_t i = 0; i < n; ++i) {
    const acc v = static_cast<acc>(src[i * step]);
    const bool take = max_takes(v, best[i]);
    best[i] = take ? v : best[i];
    best_index[i] = take ? first_pos + i * pos_step : best_index[i];
  }
}

// Explicit float vectors (GCC/Clang vector extensions), lowered to AVX2 or SSE by the including
// file's target. Used where the auto-vectoriser gives up: select chains it has fully unrolled,
// and float reductions (which it may not reorder).
// The including file sets BIGKERN_VECTOR_LANES to its target's float vector width.
constexpr int64_t kLanes = BIGKERN_VECTOR_LANES;
typedef float f32v __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t i32v __attribute__((vector_size(kLanes * sizeof(int32_t))));

__attribute__((always_inline)) inline f32v load_f32v(const float* p) {
  f32v v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store_f32v(float* p, f32v v) { std::memcpy(p, &v, sizeof v); }
__attribute__((always_inline)) inline f32v splat_f32v(float x) { return f32v{} + x; }
__attribute__((always_inline)) inline i32v splat_i32v(int32_t x) { return i32v{} + x; }


// Accumulators of one output row / position: the output itself when it is already in the
// accumulation type (saves a pass), else a scratch buffer converted at the end.
template <typename scalar_t>
struct Accumulators {
  using acc = acc_t<scalar_t>;
  static constexpr bool kInPlace = std::is_same_v<scalar_t, acc>;
  std::vector<acc> scratch;
  explicit Accumulators(int64_t n) : scratch(kInPlace ? 0 : n) {}
  acc* at(scalar_t* dst) {
    if constexpr (kInPlace) return dst;
    else return scratch.data();
  }
  void store(scalar_t* __restrict__ dst, int64_t n) const {
    if constexpr (!kInPlace)
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(scratch[i]);
  }
};

// ---------------------------------------------------------------------------------------------
// max_pool2d forward
// ---------------------------------------------------------------------------------------------

template <typename scalar_t, bool kWriteIndices>
void max_pool2d_nchw(const scalar_t* in, scalar_t* out, int64_t* indices, const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t planes = g.N * g.C, plane_in = g.H * g.W, plane_out = g.OH * g.OW;
  at::parallel_for(0, planes, grain_for(plane_out * g.kh * g.kw), [&](int64_t begin, int64_t end) {
    Accumulators<scalar_t> best(g.OW);
    std::vector<int64_t> best_index(kWriteIndices ? g.OW : 0);
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* src = in + p * plane_in;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t hstart = oh * g.sh - g.ph;
        scalar_t* dst = out + p * plane_out + oh * g.OW;
        acc* __restrict__ b = best.at(dst);
        for (int64_t ow = 0; ow < g.OW; ++ow) b[ow] = -std::numeric_limits<acc>::infinity();
        if constexpr (kWriteIndices) {
          const int64_t ih0 = first_valid(hstart, g.dh);
          for (int64_t ow = 0; ow < g.OW; ++ow) best_index[ow] = ih0 * g.W + first_valid(ow * g.sw - g.pw, g.dw);
        }
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = hstart + kh * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const scalar_t* row = src + ih * g.W;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const int64_t offset = kw * g.dw - g.pw;
            int64_t lo, hi;
            valid_output_range(offset, g.sw, g.W, g.OW, lo, hi);
            if (hi <= lo) continue;
            const scalar_t* first = row + offset + lo * g.sw;
            if constexpr (kWriteIndices) {
              max_tap_indexed(first, g.sw, b + lo, best_index.data() + lo, hi - lo, ih * g.W + offset + lo * g.sw, g.sw);
            } else {
              max_tap(first, g.sw, b + lo, hi - lo);
            }
          }
        }
        best.store(dst, g.OW);
        if constexpr (kWriteIndices) {
          std::copy(best_index.begin(), best_index.end(), indices + p * plane_out + oh * g.OW);
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// avg_pool2d forward
// ---------------------------------------------------------------------------------------------

// Divisor and clipped window of one output along one dimension, torch's rules.
struct AvgWindow {
  int64_t start, end, padded_len;
};
inline AvgWindow avg_window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t in) {
  int64_t start = o * stride - pad;
  int64_t end = std::min(start + k, in + pad);
  const int64_t padded_len = end - start;
  return {std::max<int64_t>(start, 0), std::min(end, in), padded_len};
}

inline int64_t avg_divisor(const AvgWindow& h, const AvgWindow& w, bool count_include_pad,
                           std::optional<int64_t> divisor_override) {
  if (divisor_override.has_value()) return *divisor_override;
  return count_include_pad ? h.padded_len * w.padded_len : (h.end - h.start) * (w.end - w.start);
}

template <typename scalar_t>
void avg_pool2d_nchw(const scalar_t* in, scalar_t* out, const Pool2dGeometry& g, bool count_include_pad,
                     std::optional<int64_t> divisor_override) {
  using acc = acc_t<scalar_t>;
  const int64_t planes = g.N * g.C, plane_in = g.H * g.W, plane_out = g.OH * g.OW;
  // Divisors depend on (oh, ow) only: compute them once per call, not once per plane.
  std::vector<acc> divisor(plane_out);
  std::vector<uint8_t> empty_window(plane_out);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const AvgWindow wh = avg_window(oh, g.sh, g.ph, g.kh, g.H);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      const AvgWindow ww = avg_window(ow, g.sw, g.pw, g.kw, g.W);
      divisor[oh * g.OW + ow] = static_cast<acc>(avg_divisor(wh, ww, count_include_pad, divisor_override));
      empty_window[oh * g.OW + ow] = wh.start >= wh.end || ww.start >= ww.end;
    }
  }
  at::parallel_for(0, planes, grain_for(plane_out * g.kh * g.kw), [&](int64_t begin, int64_t end) {
    std::vector<acc> sum(g.OW);
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* src = in + p * plane_in;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t hstart = oh * g.sh - g.ph;
        acc* __restrict__ s = sum.data();
        std::fill(sum.begin(), sum.end(), acc(0));
        for (int64_t kh = 0; kh < g.kh; ++kh) {
          const int64_t ih = hstart + kh;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t kw = 0; kw < g.kw; ++kw) {
            const int64_t offset = kw - g.pw;
            int64_t lo, hi;
            valid_output_range(offset, g.sw, g.W, g.OW, lo, hi);
            const scalar_t* __restrict__ tap = src + ih * g.W + offset;
            if (g.sw == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) s[ow] += static_cast<acc>(tap[ow]);
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) s[ow] += static_cast<acc>(tap[ow * g.sw]);
            }
          }
        }
        const acc* __restrict__ d = divisor.data() + oh * g.OW;
        const uint8_t* e = empty_window.data() + oh * g.OW;
        scalar_t* __restrict__ dst = out + p * plane_out + oh * g.OW;
        for (int64_t ow = 0; ow < g.OW; ++ow) dst[ow] = static_cast<scalar_t>(e[ow] ? acc(0) : s[ow] / d[ow]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// adaptive pools forward
// ---------------------------------------------------------------------------------------------

// Sum of n contiguous elements, in the accumulation type. float32 uses eight vector
// accumulators, enough independent adds to cover the add latency (reassociating the sum, as
// torch's vectorised reductions do).
template <typename scalar_t>
inline acc_t<scalar_t> contiguous_sum(const scalar_t* __restrict__ src, int64_t n) {
  int64_t i = 0;
  acc_t<scalar_t> total = 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    // Two streams (the halves of the run) feed four accumulators each: two sequential streams
    // keep more cache-line fills in flight than one.
    constexpr int64_t kAccumulators = 8, kHalf = kAccumulators / 2, kStep = kHalf * kLanes;
    f32v partial[kAccumulators];
    for (int64_t k = 0; k < kAccumulators; ++k) partial[k] = splat_f32v(0.f);
    const int64_t half = (n / (2 * kStep)) * kStep;
    const float* second = src + half;
    for (; i < half; i += kStep)
      for (int64_t k = 0; k < kHalf; ++k) {
        partial[k] += load_f32v(src + i + k * kLanes);
        partial[kHalf + k] += load_f32v(second + i + k * kLanes);
      }
    i = 2 * half;
    for (int64_t width = kAccumulators / 2; width > 0; width /= 2)
      for (int64_t k = 0; k < width; ++k) partial[k] += partial[k + width];
    const f32v sum = partial[0];
    for (int64_t lane = 0; lane < kLanes; ++lane) total += sum[lane];
  }
  for (; i < n; ++i) total += static_cast<acc_t<scalar_t>>(src[i]);
  return total;
}

// Adaptive average, NCHW: per output row, first sum the row's input rows into column sums (long,
// contiguous, vectorised), then each output adds its slice of the column sums. A single output
// column (global pooling included) is one contiguous run, summed directly.
template <typename scalar_t>
void adaptive_avg_pool2d_nchw(const scalar_t* in, scalar_t* out, const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t planes = g.N * g.C, plane_in = g.H * g.W, plane_out = g.OH * g.OW, W = g.W;
  at::parallel_for(0, planes, grain_for(plane_in), [&](int64_t begin, int64_t end) {
    std::vector<acc> column_sum(W);
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* src = in + p * plane_in;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t h0 = adaptive_start(oh, g.H, g.OH), h1 = adaptive_end(oh, g.H, g.OH);
        scalar_t* dst = out + p * plane_out + oh * g.OW;
        if (g.OW == 1) {  // the window is whole rows: one contiguous run of memory
          dst[0] = static_cast<scalar_t>(contiguous_sum(src + h0 * W, (h1 - h0) * W) / static_cast<acc>((h1 - h0) * W));
          continue;
        }
        acc* __restrict__ cs = column_sum.data();
        std::fill(cs, cs + W, acc(0));
        for (int64_t ih = h0; ih < h1; ++ih) {
          const scalar_t* __restrict__ row = src + ih * W;
          for (int64_t iw = 0; iw < W; ++iw) cs[iw] += static_cast<acc>(row[iw]);
        }
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, g.OW), w1 = adaptive_end(ow, W, g.OW);
          acc sum = 0;
          for (int64_t iw = w0; iw < w1; ++iw) sum += cs[iw];
          dst[ow] = static_cast<scalar_t>(sum / static_cast<acc>((h1 - h0) * (w1 - w0)));
        }
      }
    }
  });
}

// Adaptive max, NCHW, windows of unequal size (equal windows go to max_pool2d_nchw). The scan
// stays row-major per window so ties and NaNs pick torch's index; the select is branch-free
// because random data makes the branch unpredictable.
template <typename scalar_t, bool kWriteIndices>
void adaptive_max_pool2d_nchw(const scalar_t* in, scalar_t* out, int64_t* indices, const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t planes = g.N * g.C, plane_in = g.H * g.W, plane_out = g.OH * g.OW, W = g.W;
  at::parallel_for(0, planes, grain_for(plane_in), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const scalar_t* src = in + p * plane_in;
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t h0 = adaptive_start(oh, g.H, g.OH), h1 = adaptive_end(oh, g.H, g.OH);
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t w0 = adaptive_start(ow, W, g.OW), w1 = adaptive_end(ow, W, g.OW);
          acc best = -std::numeric_limits<acc>::infinity();
          int64_t best_index = h0 * W + w0;
          for (int64_t ih = h0; ih < h1; ++ih) {
            for (int64_t iw = w0; iw < w1; ++iw) {
              const acc v = static_cast<acc>(src[ih * W + iw]);
              const bool take = max_takes(v, best);
              best = take ? v : best;
              best_index = take ? ih * W + iw : best_index;
            }
          }
          const int64_t o = p * plane_out + oh * g.OW + ow;
          out[o] = static_cast<scalar_t>(best);
          if constexpr (kWriteIndices) indices[o] = best_index;
        }
      }
    }
  });
}

#include "cpu/pool_kernels_nhwc.h"

// ---------------------------------------------------------------------------------------------
// backward: scatter into an accumulator owned by one task, then convert once.
// ---------------------------------------------------------------------------------------------

// Calls scatter(accum, pixel_stride, item, c0, c1) on zeroed accumulators, where the gradient of
// input pixel i, channel c0 + c lives at accum[i * pixel_stride + c]. NCHW tasks own one (n, c)
// plane (item = n * C + c); NHWC tasks own one image n (item = n) and a block of channels, so a
// batch of one image still spreads across threads. Float and double accumulate straight into
// grad_in; half types accumulate in a float scratch buffer converted once at the end.
template <typename scalar_t, typename Scatter>
void scatter_backward(scalar_t* grad_in, const Pool2dGeometry& g, int64_t work_per_plane, Scatter scatter) {
  using acc = acc_t<scalar_t>;
  constexpr bool kInPlace = std::is_same_v<acc, scalar_t>;
  const int64_t plane_in = g.H * g.W;
  if (!g.channels_last) {
    at::parallel_for(0, g.N * g.C, grain_for(work_per_plane), [&](int64_t begin, int64_t end) {
      std::vector<acc> scratch(kInPlace ? 0 : plane_in);
      for (int64_t p = begin; p < end; ++p) {
        scalar_t* dst = grad_in + p * plane_in;
        acc* accum = kInPlace ? reinterpret_cast<acc*>(dst) : scratch.data();
        std::fill(accum, accum + plane_in, acc(0));
        scatter(accum, int64_t(1), p, int64_t(0), int64_t(1));
        if constexpr (!kInPlace)
          for (int64_t i = 0; i < plane_in; ++i) dst[i] = static_cast<scalar_t>(accum[i]);
      }
    });
    return;
  }
  constexpr int64_t kBlock = 64;
  const int64_t blocks_per_image = (g.C + kBlock - 1) / kBlock;
  at::parallel_for(0, g.N * blocks_per_image, grain_for(work_per_plane * kBlock), [&](int64_t begin, int64_t end) {
    std::vector<acc> scratch(kInPlace ? 0 : plane_in * kBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks_per_image;
      const int64_t c0 = (task % blocks_per_image) * kBlock, c1 = std::min(g.C, c0 + kBlock), cb = c1 - c0;
      scalar_t* dst = grad_in + n * plane_in * g.C + c0;
      acc* accum = kInPlace ? reinterpret_cast<acc*>(dst) : scratch.data();
      const int64_t stride = kInPlace ? g.C : cb;
      for (int64_t i = 0; i < plane_in; ++i) std::fill(accum + i * stride, accum + i * stride + cb, acc(0));
      scatter(accum, stride, n, c0, c1);
      if constexpr (!kInPlace)
        for (int64_t i = 0; i < plane_in; ++i)
          for (int64_t c = 0; c < cb; ++c) dst[i * g.C + c] = static_cast<scalar_t>(accum[i * cb + c]);
    }
  });
}

// Max pools (window and adaptive): route each output gradient to the input its index names.
// An index outside the plane (a dilated window lying wholly in the padding, whose output is
// -inf and depends on no input) routes nowhere.
template <typename scalar_t>
void max_pool2d_backward_kernel(const scalar_t* grad_out, const int64_t* indices, scalar_t* grad_in,
                                const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t plane_out = g.OH * g.OW, plane_in = g.H * g.W;
  scatter_backward<scalar_t>(grad_in, g, plane_out, [&](acc* accum, int64_t stride, int64_t item, int64_t c0, int64_t c1) {
    if (!g.channels_last) {
      const scalar_t* go = grad_out + item * plane_out;
      const int64_t* idx = indices + item * plane_out;
      for (int64_t o = 0; o < plane_out; ++o)
        if (idx[o] >= 0 && idx[o] < plane_in) accum[idx[o]] += static_cast<acc>(go[o]);
      return;
    }
    const int64_t cb = c1 - c0;
    for (int64_t o = 0; o < plane_out; ++o) {
      const scalar_t* go = grad_out + (item * plane_out + o) * g.C + c0;
      const int64_t* idx = indices + (item * plane_out + o) * g.C + c0;
      for (int64_t c = 0; c < cb; ++c)
        if (idx[c] >= 0 && idx[c] < plane_in) accum[idx[c] * stride + c] += static_cast<acc>(go[c]);
    }
  });
}

// Window average: each output gradient, divided by the forward's divisor, spread over its window.
template <typename scalar_t>
void avg_pool2d_backward_kernel(const scalar_t* grad_out, scalar_t* grad_in, const Pool2dGeometry& g,
                                bool count_include_pad, std::optional<int64_t> divisor_override) {
  using acc = acc_t<scalar_t>;
  const int64_t plane_out = g.OH * g.OW;
  scatter_backward<scalar_t>(grad_in, g, plane_out * g.kh * g.kw, [&](acc* accum, int64_t stride, int64_t item, int64_t c0, int64_t c1) {
    const int64_t cb = c1 - c0;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const AvgWindow wh = avg_window(oh, g.sh, g.ph, g.kh, g.H);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow ww = avg_window(ow, g.sw, g.pw, g.kw, g.W);
        if (wh.start >= wh.end || ww.start >= ww.end) continue;
        const acc d = static_cast<acc>(avg_divisor(wh, ww, count_include_pad, divisor_override));
        const int64_t o = oh * g.OW + ow;
        if (!g.channels_last) {
          const acc share = static_cast<acc>(grad_out[item * plane_out + o]) / d;
          for (int64_t ih = wh.start; ih < wh.end; ++ih)
            for (int64_t iw = ww.start; iw < ww.end; ++iw) accum[ih * g.W + iw] += share;
          continue;
        }
        const scalar_t* go = grad_out + (item * plane_out + o) * g.C + c0;
        for (int64_t ih = wh.start; ih < wh.end; ++ih)
          for (int64_t iw = ww.start; iw < ww.end; ++iw) {
            acc* __restrict__ a = accum + (ih * g.W + iw) * stride;
            for (int64_t c = 0; c < cb; ++c) a[c] += static_cast<acc>(go[c]) / d;
          }
      }
    }
  });
}

template <typename scalar_t>
void adaptive_avg_pool2d_backward_kernel(const scalar_t* grad_out, scalar_t* grad_in, const Pool2dGeometry& g) {
  using acc = acc_t<scalar_t>;
  const int64_t plane_out = g.OH * g.OW;
  scatter_backward<scalar_t>(grad_in, g, g.H * g.W, [&](acc* accum, int64_t stride, int64_t item, int64_t c0, int64_t c1) {
    const int64_t cb = c1 - c0;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t h0 = adaptive_start(oh, g.H, g.OH), h1 = adaptive_end(oh, g.H, g.OH);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t w0 = adaptive_start(ow, g.W, g.OW), w1 = adaptive_end(ow, g.W, g.OW);
        const acc area = static_cast<acc>((h1 - h0) * (w1 - w0));
        const int64_t o = oh * g.OW + ow;
        if (!g.channels_last) {
          const acc share = static_cast<acc>(grad_out[item * plane_out + o]) / area;
          for (int64_t ih = h0; ih < h1; ++ih)
            for (int64_t iw = w0; iw < w1; ++iw) accum[ih * g.W + iw] += share;
          continue;
        }
        const scalar_t* go = grad_out + (item * plane_out + o) * g.C + c0;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) {
            acc* __restrict__ a = accum + (ih * g.W + iw) * stride;
            for (int64_t c = 0; c < cb; ++c) a[c] += static_cast<acc>(go[c]) / area;
          }
      }
    }
  });
}
