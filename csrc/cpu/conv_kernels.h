// CPU convolution kernels, written once and compiled once per instruction set (included inside
// `namespace bigkern::cpu::<isa>` after the ISA file has switched the compiler's target).
//
// Everything is an implicit GEMM over channels_last (NHWC) storage, where one pixel's channels
// are contiguous: no im2col buffer is ever built.
//
// Forward: out[pixel][k] = sum over taps (r, s) and channels c of x[src(pixel, r, s)][c] * w[k][c][r][s].
// A register tile holds kTilePixels consecutive output pixels x kVectors vectors of output channels
// (AVX2: 6 x 2, 12 accumulators, 2 weight vectors and a broadcast in 15 of its 16 registers;
// AVX-512: 6 x 4 in 29 of its 32). For each tap the
// tile keeps one source pointer per pixel; a tap whose source pixel lies in the padding points
// at a row of zeros, so padding, stride and dilation cost nothing in the inner loop, which is
// one broadcast of x per kVectors fused multiply-adds, the weight vectors loaded once per
// channel and reused across the tile's pixels. Taps
// that fall entirely outside the input for the whole tile are skipped. The epilogue (bias,
// residual, activation, pre-activation) runs on the accumulators before anything is stored,
// and stores through the output's strides, so NCHW and channels_last outputs need no copy.
//
// Input gradient (dgrad): the same kernel with the roles of input and output exchanged: the
// tile is input pixels x vectors of input channels, the reduction runs over output
// channels, and the source pixel of tap (r, s) is (h + top - r*dilation) / stride when that
// divides exactly (a zero row otherwise), so any stride is served without zero insertion.
//
// Weight gradient (wgrad): for each tap, dW_tap[k][c] = sum over pixels gz[pixel][k] *
// x[src(pixel, r, s)][c]. Pixels are split between threads in chunks of kChunk; a chunk's
// gradient rows and its shifted input rows are first packed (zero-padded to whole tiles), then
// a kWgradRows x kWgradVectors register tile accumulates over the chunk's pixels. Each thread sums into its
// own partial dW; the partials are added at the end (deterministic for a given thread count).

#include "cpu/attention_simd.h"  // simd_t, vload/vstore, vsplat, fmadd

namespace conv_detail {

// The forward/dgrad register tile: kTilePixels pixels x kVectors vectors of channels.
// With 16 vector registers (AVX2, baseline): 12 accumulators. 6 x 2 (16 channels per block) and
// 3 x 4 (32; the broadcasts first, then one weight vector at a time, to fit 16 registers) ran at
// the same speed on the 2-core EPYC (about 90 GFLOP/s per core, 3x3, 64 -> 64 channels); 6 x 2
// wastes fewer lanes when the channel count is not a multiple of the block.
// With AVX-512's 32 registers: 24 accumulators, 4 weight vectors and a broadcast. 4 x 4, 5 x 4 and
// 6 x 4 ran within noise of each other on both machines measured (Zen 4 EPYC, Sapphire Rapids-class
// Xeon), 12 x 2 and 8 x 3 were 10-30% slower, and 7 x 4 spills an accumulator; 6 x 4 reads the
// fewest weight bytes per multiply-add, which matters where two 512-bit FMA units drain the L2
// (the Xeon). See docs/conv.md.
// The wgrad register tiles: rows of dW (output channels) x vectors of input channels, one for
// ordinary layers and one for patches (few input channels, uses_patches), whose R*S*C columns
// (27 for a 3-channel 3x3) would be mostly padding in 64-wide blocks. With AVX-512, 6 x 4 reads
// 10 operands per 24 multiply-adds where 12 x 2 read 14, and pads 64 output channels to 66 rows,
// not 72.
#if BIGKERN_ATTN_VECTOR_BYTES == 64 && BIGKERN_CONV_NARROW_TILE
// The 32-channel AVX-512 build (conv_kernels_avx512_narrow.cpp) for layers of about 32 channels,
// which would leave half of the 64-wide tile's lanes empty: 12 x 2 (130 GFLOP/s per core on the
// Xeon at 64 channels, against 6 x 4's 150 and AVX2's 77).
constexpr int kVectors = 2;
constexpr int kTilePixels = 12;
constexpr int kWgradRows = 12, kWgradVectors = 2;
constexpr int kPatchWgradRows = 12, kPatchWgradVectors = 2;
#elif BIGKERN_ATTN_VECTOR_BYTES == 64
constexpr int kVectors = 4;
constexpr int kTilePixels = 6;
constexpr int kWgradRows = 6, kWgradVectors = 4;
constexpr int kPatchWgradRows = 12, kPatchWgradVectors = 2;
#else
constexpr int kVectors = 2;
constexpr int kTilePixels = 12 / kVectors;
constexpr int kWgradRows = 6, kWgradVectors = 2;
constexpr int kPatchWgradRows = 6, kPatchWgradVectors = 2;
#endif
constexpr int64_t kChunk = 96;  // pixels per wgrad packing chunk (its packed rows stay in L1/L2)
// Up to this many input channels (a network's first layer: 1 or 3), the forward and wgrad gather
// each pixel's whole receptive field (R x S x C values) into a row first (see uses_patches):
// one reduction of R*S*C steps instead of R*S reductions of C.
constexpr int64_t kPatchChannels = kFewChannels;
// Reduction channels per weight-panel chunk (see pack_panels). Measured on the 2-core EPYC for 3x3
// convolutions: chunks of 32 were 5-10% slower than none at 64 and 128 channels, so only deeper
// reductions are split (on the Xeon with AVX-512, chunks of 16 and 32 were within noise of none).
constexpr int64_t kDepthChunk = 128;

template <typename T>
constexpr int64_t kLanes = Simd<T>::kLanes;

template <typename T>
constexpr int64_t kBlock = kVectors * Simd<T>::kLanes;  // channels per register tile column block
constexpr int64_t kPrefetchRows = 4;  // tile_product's weight prefetch distance, in rows of kBlock weights

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t worker_count() { return at::in_parallel_region() ? 1 : std::max<int64_t>(1, at::get_num_threads()); }

template <typename T>
inline T activate(T z, int64_t activation) {
  switch (activation) {
    case 1: return z < T(0) ? T(0) : z;  // NaN stays NaN, as torch.relu
    case 2: return T(0.5) * z * (T(1) + std::erf(z * T(0.70710678118654752440)));
    case 3: return z / (T(1) + std::exp(-z));
    default: return z;
  }
}

template <typename T>
inline T activation_slope(T a, int64_t activation) {  // d act / dz from z (gelu, silu) or out (relu)
  switch (activation) {
    case 1: return a > T(0) ? T(1) : T(0);
    case 2: {
      const T cdf = T(0.5) * (T(1) + std::erf(a * T(0.70710678118654752440)));
      return cdf + a * std::exp(T(-0.5) * a * a) * T(0.39894228040143267794);
    }
    case 3: {
      const T sig = T(1) / (T(1) + std::exp(-a));
      return sig * (T(1) + a * (T(1) - sig));
    }
    default: return T(1);
  }
}

// out[i][h] (+)= sum over the listed taps t and c < depth of src[t][i][offset + c] *
// panel[taps[t]][c][h*L .. h*L+L), starting from zero or, to continue a previous channel
// chunk, from `out`. Each tap's products are summed in registers from zero and then added to
// `out`: a two-level sum whose rounding error grows with the channels per tap, not with
// channels x taps (one running sum over 300 channels x 9 taps was 6x further from float64 than
// torch's; adding per tap costs one vector add per accumulator per tap).
template <typename T, int PX>
BIGKERN_ATTN_INLINE void tile_product(const T* const* __restrict__ src, const int64_t* __restrict__ taps,
                                      int64_t tap_count, int64_t offset, const T* __restrict__ panel, int64_t depth,
                                      bool accumulate, simd_t<T> (&out)[kTilePixels][kVectors]) {
  constexpr int64_t L = kLanes<T>;
  if (!accumulate && tap_count == 0) {  // every tap lands in the padding
#pragma GCC unroll 12
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) out[i][v] = simd_t<T>{};
  }
  for (int64_t t = 0; t < tap_count; ++t) {
    simd_t<T> acc[PX][kVectors];
#pragma GCC unroll 12
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[i][v] = simd_t<T>{};
    const T* w = panel + taps[t] * depth * kVectors * L;
    const T* p[PX];
#pragma GCC unroll 12
    for (int i = 0; i < PX; ++i) p[i] = src[t * kTilePixels + i] + offset;
    for (int64_t c = 0; c < depth; ++c) {
      // The weights stream from L2 (a 3x3 64 -> 64 layer's panel is 147 KB, read once per tile);
      // fetched kPrefetchRows rows ahead they are in L1 when loaded (4% faster on the Xeon,
      // single thread, with the interior-tile pointer tables of implicit_gemm). A prefetch past the
      // panel's end is harmless: prefetches never fault.
#pragma GCC unroll 4
      for (int64_t line = 0; line < kBlock<T> * static_cast<int64_t>(sizeof(T)); line += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(w + kPrefetchRows * kBlock<T>) + line);
      // Hold the shorter side of the tile in registers (the weights for 6 x 2, the broadcasts for
      // 3 x 4) and stream the other, so accumulators + operands fit in the register file.
      if constexpr (kVectors <= kTilePixels) {
        simd_t<T> wv[kVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) wv[v] = vload(w + v * L);
#pragma GCC unroll 12
        for (int i = 0; i < PX; ++i) {
          const simd_t<T> b = vsplat(p[i][c]);
#pragma GCC unroll 4
          for (int v = 0; v < kVectors; ++v) acc[i][v] = fmadd(b, wv[v], acc[i][v]);
        }
      } else {
        simd_t<T> b[PX];
#pragma GCC unroll 12
        for (int i = 0; i < PX; ++i) b[i] = vsplat(p[i][c]);
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) {
          const simd_t<T> wv = vload(w + v * L);
#pragma GCC unroll 12
          for (int i = 0; i < PX; ++i) acc[i][v] = fmadd(b[i], wv, acc[i][v]);
        }
      }
      w += kVectors * L;
    }
    const bool add = accumulate || t > 0;
#pragma GCC unroll 12
    for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) out[i][v] = add ? out[i][v] + acc[i][v] : acc[i][v];
  }
}

// 8 x 8 transpose of floats in 32-byte vectors (unpack, shuffle, then swap 128-bit halves): rows
// in[i] = pixel i's 8 channels become out[c] = channel c's 8 pixels.
using f32x8 = float __attribute__((vector_size(32)));
using i32x8 = int32_t __attribute__((vector_size(32)));
BIGKERN_ATTN_INLINE void transpose8x8(const f32x8 (&in)[8], f32x8 (&out)[8]) {
  f32x8 a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = __builtin_shuffle(in[i], in[i + 1], i32x8{0, 8, 1, 9, 4, 12, 5, 13});
    a[i + 1] = __builtin_shuffle(in[i], in[i + 1], i32x8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      b[i + 2 * h] = __builtin_shuffle(a[i + h], a[i + h + 2], i32x8{0, 1, 8, 9, 4, 5, 12, 13});
      b[i + 2 * h + 1] = __builtin_shuffle(a[i + h], a[i + h + 2], i32x8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int c = 0; c < 4; ++c) {
    out[c] = __builtin_shuffle(b[c], b[c + 4], i32x8{0, 1, 2, 3, 8, 9, 10, 11});
    out[c + 4] = __builtin_shuffle(b[c], b[c + 4], i32x8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// Weights as panels: panel[g][block][chunk][tap][d][j] = the weight between reduction channel
// chunk*kDepthChunk + d and tile channel block*kBlock + j of group g (zero past the group's
// channels). Forward: reduction over input channels, tile over output channels; transposed
// (dgrad): the other way round. A strip of tiles runs over one chunk's panel (taps x kDepthChunk
// x kBlock) at a time, so the panel is read from cache, not memory, however deep the reduction.
template <typename T>
std::vector<T> pack_panels(const T* w, const ConvShape& s, bool transposed) {
  const int64_t G = s.groups, Kg = s.K / G, Cg = s.C / G, RS = s.R * s.S;
  const int64_t depth = transposed ? Kg : Cg, width = transposed ? Cg : Kg;
  const int64_t blocks = ceil_div(width, kBlock<T>), chunks = ceil_div(depth, kDepthChunk);
  const int64_t block_size = RS * depth * kBlock<T>;
  std::vector<T> panel(static_cast<size_t>(G * blocks * block_size), T(0));
  if constexpr (std::is_same_v<T, float>) {
    if (!transposed && Kg % 8 == 0) {
      // The forward's panel is the transpose of w's (K, Cg*R*S) rows with the columns (c, tap)
      // reordered: moved in 8 x 8 blocks transposed in registers, each block's column stored as
      // one vector at its (tap, c) row. Gathering the panel element by element at a stride of
      // Cg*R*S was 40% of a 64 -> 64 3x3 call on a tiny image and would be a fifth of a call on a
      // 7x7 map with 512 channels.
      const int64_t cols = Cg * RS, k_groups = Kg / 8;
      std::vector<int64_t> row_at(static_cast<size_t>(cols));  // offset in its block of column (c, tap)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t tap = 0; tap < RS; ++tap) {
          const int64_t d0 = c / kDepthChunk * kDepthChunk, len = std::min(kDepthChunk, depth - d0);
          row_at[c * RS + tap] = (RS * d0 + tap * len + c - d0) * kBlock<T>;
        }
      at::parallel_for(0, G * k_groups, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t item = b0; item < b1; ++item) {
          const int64_t g = item / k_groups, k0 = item % k_groups * 8;
          T* block_panel = panel.data() + (g * blocks + k0 / kBlock<T>) * block_size + k0 % kBlock<T>;
          const T* rows = w + (g * Kg + k0) * cols;
          int64_t col0 = 0;
          for (; col0 + 8 <= cols; col0 += 8) {
            f32x8 in[8], out[8];
            for (int i = 0; i < 8; ++i) std::memcpy(&in[i], rows + i * cols + col0, sizeof(f32x8));
            transpose8x8(in, out);
            for (int c = 0; c < 8; ++c) std::memcpy(block_panel + row_at[col0 + c], &out[c], sizeof(f32x8));
          }
          for (; col0 < cols; ++col0)
            for (int i = 0; i < 8; ++i) block_panel[row_at[col0] + i] = rows[i * cols + col0];
        }
      });
      return panel;
    }
  }
  // Element strides in w (K, Cg, R, S) of a step along the panel's columns (j) and rows (d).
  const int64_t column_stride = transposed ? RS : Cg * RS, row_stride = transposed ? Cg * RS : RS;
  // The other panels (dgrad's, float64, output channels not a multiple of 8): gathered at a stride,
  // in parallel over (group, block, tap) so that even a single block is packed by every thread.
  at::parallel_for(0, G * blocks * RS, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t item = b0; item < b1; ++item) {
      const int64_t gb = item / RS, tap = item % RS, g = gb / blocks, block = gb % blocks;
      const int64_t columns = std::min(kBlock<T>, width - block * kBlock<T>);
      const T* base = w + (transposed ? g * Kg * Cg * RS + block * kBlock<T> * RS
                                      : (g * Kg + block * kBlock<T>) * Cg * RS) + tap;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t d0 = chunk * kDepthChunk, len = std::min(kDepthChunk, depth - d0);
        T* chunk_panel = panel.data() + gb * block_size + RS * d0 * kBlock<T>;
        for (int64_t d = 0; d < len; ++d) {
          T* dst = chunk_panel + (tap * len + d) * kBlock<T>;
          const T* from = base + (d0 + d) * row_stride;
          for (int64_t j = 0; j < columns; ++j) dst[j] = from[j * column_stride];
        }
      }
    }
  });
  return panel;
}

// Calls f(std::integral_constant<int, px>) for px in [1, kTilePixels]: tile_product's row
// count is a compile-time constant, so its accumulators stay in registers.
template <typename T, int PX = kTilePixels, typename F>
BIGKERN_ATTN_INLINE void dispatch_pixels(int px, F&& f) {
  if constexpr (PX >= 1) {
    if (px == PX) return f(std::integral_constant<int, PX>{});
    dispatch_pixels<T, PX - 1>(px, f);
  }
}

// A reduction over a few channels per tap would spend more on each tap's setup than on its
// multiply-adds, and wgrad's vector columns would be mostly padding.
inline bool uses_patches(const ConvShape& s) { return s.groups == 1 && s.C <= kPatchChannels; }

// Depthwise convolution (is_depthwise: one input and one output channel per group) is not a
// product over channels: each output channel is its own input channel's stencil. The tile holds the same
// pixels x channels as the GEMM tile, but the channels are the vector lanes of both operands:
// acc[i][v] += x[src(pixel i, tap)][ch0 + v*L ..] * w[tap][ch0 + v*L ..]. A block at the
// channel tail (fewer than kBlock channels left) is computed lane by lane, so no load runs past
// a pixel's channels.
template <typename T>
std::vector<T> pack_depthwise_panel(const T* w, const ConvShape& s) {
  const int64_t RS = s.R * s.S, padded = ceil_div(s.C, kBlock<T>) * kBlock<T>;
  std::vector<T> panel(static_cast<size_t>(RS * padded), T(0));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t tap = 0; tap < RS; ++tap) panel[tap * padded + c] = w[c * RS + tap];
  return panel;
}

template <typename T, int PX>
BIGKERN_ATTN_INLINE void depthwise_block(const T* const* __restrict__ src, const int64_t* __restrict__ taps,
                                         int64_t tap_count, int64_t ch0, const T* __restrict__ panel, int64_t padded,
                                         simd_t<T> (&out)[kTilePixels][kVectors]) {
  constexpr int64_t L = kLanes<T>;
  simd_t<T> acc[PX][kVectors] = {};
  for (int64_t t = 0; t < tap_count; ++t) {
    const T* w = panel + taps[t] * padded + ch0;
    simd_t<T> wv[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) wv[v] = vload(w + v * L);
#pragma GCC unroll 12
    for (int i = 0; i < PX; ++i) {
      const T* x = src[t * kTilePixels + i] + ch0;
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[i][v] = fmadd(vload(x + v * L), wv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < PX; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) out[i][v] = acc[i][v];
}

template <typename T>
void depthwise_product(const T* const* src, const int64_t* taps, int64_t tap_count, int px, int64_t ch0,
                       int64_t count, const T* panel, int64_t padded, simd_t<T> (&out)[kTilePixels][kVectors]) {
  constexpr int64_t L = kLanes<T>;
  if (count == kBlock<T>) {
    dispatch_pixels<T>(px, [&](auto pixels) {
      depthwise_block<T, decltype(pixels)::value>(src, taps, tap_count, ch0, panel, padded, out);
    });
    return;
  }
  T acc[kTilePixels][kBlock<T>] = {};
  for (int64_t t = 0; t < tap_count; ++t) {
    const T* w = panel + taps[t] * padded + ch0;
    for (int i = 0; i < px; ++i)
      for (int64_t j = 0; j < count; ++j) acc[i][j] += src[t * kTilePixels + i][ch0 + j] * w[j];
  }
  for (int i = 0; i < px; ++i)
    for (int v = 0; v < kVectors; ++v) out[i][v] = vload(&acc[i][v * L]);
}

template <typename T>
struct Epilogue {
  const T* bias = nullptr;  // per destination channel, or null
  Strided residual, out, preact;
  int64_t activation = 0;
};

// Element offset of pixel (row, col) of image n in a strided tensor.
inline int64_t pixel_offset(const Strided& t, int64_t n, int64_t row, int64_t col) {
  return n * t.sn + row * t.sh + col * t.sw;
}

// Stores one register tile: px pixels of image n starting at flat pixel index pix0 of a
// (rows, cols) plane (a tile may wrap onto the next row), channels [ch0, ch0 + count).
// The output goes to `dst` (e.out, or a staging buffer: see implicit_gemm), whose pixel
// offsets are shifted by `dst_shift` elements.
template <typename T>
BIGKERN_ATTN_INLINE void store_tile(const simd_t<T> (&acc)[kTilePixels][kVectors], int px, int64_t n, int64_t pix0,
                                    int64_t cols, int64_t ch0, int64_t count, const Epilogue<T>& e, const Strided& dst,
                                    int64_t dst_shift) {
  constexpr int64_t L = kLanes<T>;
  int64_t out_at[kTilePixels], res_at[kTilePixels], pre_at[kTilePixels];
  int64_t row = pix0 / cols, col = pix0 % cols;
  for (int i = 0; i < px; ++i, ++col) {
    if (col == cols) col = 0, ++row;
    out_at[i] = pixel_offset(dst, n, row, col) + ch0 * dst.sc + dst_shift;
    res_at[i] = pixel_offset(e.residual, n, row, col) + ch0 * e.residual.sc;
    pre_at[i] = pixel_offset(e.preact, n, row, col) + ch0 * e.preact.sc;
  }
  T* out = static_cast<T*>(dst.data);
  const T* res = static_cast<const T*>(e.residual.data);
  T* pre = static_cast<T*>(e.preact.data);
  // Whole vectors of channels where the destination, residual and pre-activation are
  // channels-last (NCHW outputs go through a channels-last staging buffer): relu as a select,
  // silu through the vector exp; gelu (erf) and the channels past the last whole vector go
  // element by element.
  const bool vectors_ok = dst.sc == 1 && (pre == nullptr || e.preact.sc == 1) &&
                          (res == nullptr || e.residual.sc == 1) && e.activation != 2;
  const int whole = vectors_ok ? static_cast<int>(count / L) : 0;
  for (int v = 0; v < whole; ++v) {
    const simd_t<T> bias = e.bias ? vload(e.bias + ch0 + v * L) : simd_t<T>{};
    for (int i = 0; i < px; ++i) {
      simd_t<T> z = acc[i][v] + bias;
      if (res != nullptr) z += vload(res + res_at[i] + v * L);
      if (pre != nullptr) vstore(pre + pre_at[i] + v * L, z);
      if (e.activation == 1) z = z < simd_t<T>{} ? simd_t<T>{} : z;
      if (e.activation == 3) z = z * sigmoid_v<T>(z);
      vstore(out + out_at[i] + v * L, z);
    }
  }
  // Channel-major order: for NCHW outputs consecutive stores are the row's consecutive pixels.
  for (int64_t j = whole * L; j < count; ++j) {
    const T b = e.bias ? e.bias[ch0 + j] : T(0);
    for (int i = 0; i < px; ++i) {
      T z = acc[i][j / L][j % L] + b;
      if (res != nullptr) z += res[res_at[i] + j * e.residual.sc];
      if (pre != nullptr) pre[pre_at[i] + j * e.preact.sc] = z;
      out[out_at[i] + j * dst.sc] = activate(z, e.activation);
    }
  }
}

// Copies `run` consecutive pixels of a channels-last staging buffer (rows `width` apart) to a
// channel-major destination: to[k * sc + j * sw] = from[j * width + k] for k < channels. A float
// destination whose pixels are contiguous (NCHW) is written in 8 x 8 blocks transposed in
// registers, each channel's 8 pixels stored as one vector; scalar copies were an eighth of the
// NCHW forward. Other cases (the tails, float64, strided pixels) copy element by element.
template <typename T>
void copy_out_channel_major(const T* from, int64_t width, int64_t run, int64_t channels, T* to, int64_t sc,
                            int64_t sw) {
  int64_t j0 = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; sw == 1 && j0 + 8 <= run; j0 += 8) {
      int64_t k0 = 0;
      for (; k0 + 8 <= channels; k0 += 8) {
        f32x8 rows[8], cols[8];
        for (int i = 0; i < 8; ++i) std::memcpy(&rows[i], from + (j0 + i) * width + k0, sizeof(f32x8));
        transpose8x8(rows, cols);
        for (int c = 0; c < 8; ++c) std::memcpy(to + (k0 + c) * sc + j0, &cols[c], sizeof(f32x8));
      }
      for (; k0 < channels; ++k0)
        for (int64_t j = j0; j < j0 + 8; ++j) to[k0 * sc + j] = from[j * width + k0];
    }
  }
  for (int64_t k = 0; k < channels; ++k)
    for (int64_t j = j0; j < run; ++j) to[k * sc + j * sw] = from[j * width + k];
}

// The implicit GEMM shared by the forward (transposed = false: src is x, destination the output)
// and dgrad (transposed = true: src is the output gradient, destination the input gradient).
// src is (N, SH, SW, SC) contiguous; the destination is (N, DC, DH, DW) through e.out's strides.
// Tiles run over each image's pixels in row-major order and may wrap from one row to the next,
// so only an image's last tile can be partial (a tile per row would leave a narrow, slow one
// at the end of every row). A destination whose channels are not contiguous (NCHW) is written
// through a staging buffer: the strip's tiles are stored channels-last into it with whole
// vectors, then copied out channel by channel, each channel's pixels a contiguous run in NCHW
// (scattering single lanes from the tiles was a third of the NCHW forward's time).
template <typename T, bool kTransposed>
void implicit_gemm(const ConvShape& s, const T* src, const std::vector<T>& panel, const Epilogue<T>& e) {
  constexpr int64_t kStripTiles = 48 / kTilePixels;  // tiles per work item: each weight panel is reused across them
  const int64_t G = s.groups, RS = s.R * s.S;
  const int64_t SH = kTransposed ? s.P : s.H, SW = kTransposed ? s.Q : s.W, SC = kTransposed ? s.K : s.C;
  const int64_t DH = kTransposed ? s.H : s.P, DW = kTransposed ? s.W : s.Q;
  const int64_t depth = kTransposed ? s.K / G : s.C / G, width = kTransposed ? s.C / G : s.K / G;
  // Depthwise (see depthwise_product): `panel` is pack_depthwise_panel's, blocks run over all channels.
  const bool depthwise = is_depthwise(s);
  const int64_t blocks = ceil_div(depthwise ? s.C : width, kBlock<T>);
  const int64_t tiles = ceil_div(DH * DW, kTilePixels), strips = ceil_div(tiles, kStripTiles);
  const int64_t channels_total = G * width;
  const bool staged = e.out.sc != 1;
  const int64_t stage_width = channels_total + kBlock<T>;  // a block's vector store may run past the last channel
  const std::vector<T> zeros(static_cast<size_t>(SC), T(0));
  // Patches (forward, few channels): each pixel's receptive field gathered into a row, in the
  // panel's (tap, channel) order, and reduced over as one tap of R*S*C "channels".
  const bool patches = !kTransposed && uses_patches(s);
  const int64_t patch = RS * s.C;
  const int64_t panel_taps = patches ? 1 : RS, panel_depth = patches ? patch : depth;
  // Source coordinate along one axis of destination coordinate `d` for kernel offset `k`, or -1.
  auto source = [](int64_t d, int64_t k, int64_t stride, int64_t pad, int64_t dil, int64_t extent) -> int64_t {
    if (!kTransposed) {
      const int64_t i = d * stride - pad + k * dil;
      return i >= 0 && i < extent ? i : -1;
    }
    const int64_t t = d + pad - k * dil;
    if (stride == 1) return t >= 0 && t < extent ? t : -1;  // no division: it was 8% of a stride-1 dgrad
    if (t < 0 || t % stride != 0 || t / stride >= extent) return -1;
    return t / stride;
  };
  // Where the source coordinate is affine in the tap (the forward; dgrad at stride 1), a tap's
  // source pixel is the pixel's first tap's plus a per-tap offset, and a tile whose taps all land
  // inside the input (most tiles of a padded layer) fills its pointer table without bounds checks
  // per tap: the checks were 4% of the forward's time.
  const bool affine = !kTransposed || (s.stride_h == 1 && s.stride_w == 1);
  const int64_t step_h = kTransposed ? -s.dilation_h : s.dilation_h, step_w = kTransposed ? -s.dilation_w : s.dilation_w;
  auto first_source = [](int64_t d, int64_t stride, int64_t pad) { return kTransposed ? d + pad : d * stride - pad; };
  std::vector<int64_t> tap_delta(static_cast<size_t>(RS));
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t q = 0; q < s.S; ++q) tap_delta[r * s.S + q] = (r * step_h * SW + q * step_w) * SC;
  // Work items (strips) are handed out in runs of consecutive strips from a shared counter rather
  // than split evenly in advance: when one core runs slower (a busy sibling hyperthread, a shared
  // host), the other takes more runs instead of waiting for it at the end. Runs (about 1/8 of a
  // thread's share) rather than single strips, so that two threads rarely write neighbouring
  // strips: in NCHW outputs those share cache lines at every channel's row.
  const int64_t items = s.N * strips;
  const int64_t team = std::min(worker_count(), items);
  const int64_t run_length = std::max<int64_t>(1, items / (team * 8));
  std::atomic<int64_t> next_run{0};
  auto work = [&]() {
    // Per tile of the strip: its taps' source pointers and which taps touch the input at all.
    std::vector<const T*> pointers(static_cast<size_t>(kStripTiles * RS * kTilePixels));
    std::vector<int64_t> taps(static_cast<size_t>(kStripTiles * RS)), tap_counts(kStripTiles);
    std::vector<T> patch_rows(patches ? static_cast<size_t>(kStripTiles * kTilePixels * patch) : 0);
    simd_t<T> acc[kStripTiles][kTilePixels][kVectors];
    std::vector<T> stage(staged ? static_cast<size_t>(kStripTiles * kTilePixels * stage_width) : 0);
    const Strided stage_dst{stage.data(), 0, 1, DW * stage_width, stage_width};
    for (int64_t item = 0, run_end = 0; item < items; ++item) {
      if (item == run_end) {  // claim the next run
        item = next_run++ * run_length;
        if (item >= items) break;
        run_end = std::min(items, item + run_length);
      }
      const int64_t n = item / strips, first = (item % strips) * kStripTiles;
      const int64_t count_tiles = std::min(kStripTiles, tiles - first);
      for (int64_t t = 0; t < count_tiles; ++t) {
        const int64_t pix0 = (first + t) * kTilePixels;
        const int px = static_cast<int>(std::min<int64_t>(kTilePixels, DH * DW - pix0));
        const T** tile_pointers = pointers.data() + t * RS * kTilePixels;
        int64_t* tile_taps = taps.data() + t * RS;
        int64_t count = 0, rows[kTilePixels], cols[kTilePixels];
        rows[0] = pix0 / DW, cols[0] = pix0 % DW;
        for (int i = 1; i < px; ++i) {  // no division per pixel and tap in the loops below
          const bool wrap = cols[i - 1] + 1 == DW;
          rows[i] = rows[i - 1] + wrap, cols[i] = wrap ? 0 : cols[i - 1] + 1;
        }
        if (patches) {  // each pixel's receptive field as one row; no pointer table
          for (int i = 0; i < px; ++i) {
            T* row = patch_rows.data() + ((t * kTilePixels) + i) * patch;
            const int64_t iw0 = cols[i] * s.stride_w - s.pad_left, iw_last = iw0 + (s.S - 1) * s.dilation_w;
            const bool contiguous = s.dilation_w == 1 && iw0 >= 0 && iw_last < SW;  // the S taps: one stretch
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t ih = rows[i] * s.stride_h - s.pad_top + r * s.dilation_h;
              if (contiguous && ih >= 0 && ih < SH) {
                std::copy_n(src + ((n * SH + ih) * SW + iw0) * SC, s.S * s.C, row);
                row += s.S * s.C;
                continue;
              }
              for (int64_t q = 0; q < s.S; ++q, row += s.C) {
                const int64_t iw = cols[i] * s.stride_w - s.pad_left + q * s.dilation_w;
                const T* from = src + ((n * SH + ih) * SW + iw) * SC;
                const bool inside = ih >= 0 && ih < SH && iw >= 0 && iw < SW;
                for (int64_t c = 0; c < s.C; ++c) row[c] = inside ? from[c] : T(0);
              }
            }
            tile_pointers[i] = patch_rows.data() + ((t * kTilePixels) + i) * patch;
          }
          tile_taps[0] = 0, tap_counts[t] = 1;
          continue;
        }
        if (affine) {  // interior tiles: every tap of every pixel inside the input, no bounds per tap
          bool inside = true;
          int64_t base[kTilePixels];
          for (int i = 0; i < px; ++i) {
            const int64_t a = first_source(rows[i], s.stride_h, s.pad_top), b = first_source(cols[i], s.stride_w, s.pad_left);
            const int64_t a_last = a + (s.R - 1) * step_h, b_last = b + (s.S - 1) * step_w;
            inside &= std::min(a, a_last) >= 0 && std::max(a, a_last) < SH && std::min(b, b_last) >= 0 && std::max(b, b_last) < SW;
            base[i] = ((n * SH + a) * SW + b) * SC;
          }
          if (inside) {
            for (int64_t k = 0; k < RS; ++k) {
              tile_taps[k] = k;
              for (int i = 0; i < px; ++i) tile_pointers[k * kTilePixels + i] = src + base[i] + tap_delta[k];
            }
            tap_counts[t] = RS;
            continue;
          }
        }
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t q = 0; q < s.S; ++q) {
            bool any = false;
            for (int i = 0; i < px; ++i) {
              const int64_t ih = source(rows[i], r, s.stride_h, s.pad_top, s.dilation_h, SH);
              const int64_t iw = ih < 0 ? -1 : source(cols[i], q, s.stride_w, s.pad_left, s.dilation_w, SW);
              any |= iw >= 0;
              tile_pointers[count * kTilePixels + i] = iw < 0 ? zeros.data() : src + ((n * SH + ih) * SW + iw) * SC;
            }
            if (any) tile_taps[count++] = r * s.S + q;
          }
        tap_counts[t] = count;
      }
      auto store = [&](int64_t t, int64_t ch0, int64_t channels) {
        const int64_t pix0 = (first + t) * kTilePixels;
        const int px = static_cast<int>(std::min<int64_t>(kTilePixels, DH * DW - pix0));
        if (staged) store_tile<T>(acc[t], px, n, pix0, DW, ch0, channels, e, stage_dst, -first * kTilePixels * stage_width);
        else store_tile<T>(acc[t], px, n, pix0, DW, ch0, channels, e, e.out, 0);
      };
      if (depthwise) {
        for (int64_t ch0 = 0; ch0 < s.C; ch0 += kBlock<T>) {
          const int64_t channels = std::min<int64_t>(kBlock<T>, s.C - ch0);
          for (int64_t t = 0; t < count_tiles; ++t) {
            const int px = static_cast<int>(std::min<int64_t>(kTilePixels, DH * DW - (first + t) * kTilePixels));
            depthwise_product<T>(pointers.data() + t * RS * kTilePixels, taps.data() + t * RS, tap_counts[t], px, ch0,
                                 channels, panel.data(), blocks * kBlock<T>, acc[t]);
            store(t, ch0, channels);
          }
        }
      }
      for (int64_t g = 0; g < G && !depthwise; ++g)
        for (int64_t block = 0; block < blocks; ++block) {
          const T* block_panel = panel.data() + (g * blocks + block) * RS * depth * kBlock<T>;
          const int64_t ch0 = g * width + block * kBlock<T>;
          const int64_t channels = std::min<int64_t>(kBlock<T>, width - block * kBlock<T>);
          for (int64_t d0 = 0; d0 < panel_depth; d0 += kDepthChunk) {
            const int64_t len = std::min(kDepthChunk, panel_depth - d0);
            const T* p = block_panel + panel_taps * d0 * kBlock<T>;
            for (int64_t t = 0; t < count_tiles; ++t) {
              const int64_t pix0 = (first + t) * kTilePixels;
              const int px = static_cast<int>(std::min<int64_t>(kTilePixels, DH * DW - pix0));
              const T* const* tp = pointers.data() + t * RS * kTilePixels;
              const int64_t* tt = taps.data() + t * RS;
              const int64_t tc = tap_counts[t], offset = g * depth + d0;
              dispatch_pixels<T>(px, [&](auto pixels) {
                tile_product<T, decltype(pixels)::value>(tp, tt, tc, offset, p, len, d0 > 0, acc[t]);
              });
              // Each tile is stored as soon as its last chunk is done: the stores' cache misses
              // then overlap the next tile's multiply-adds instead of stalling in one burst.
              if (d0 + len == panel_depth) store(t, ch0, channels);
            }
          }
        }
      if (staged) {
        const int64_t pix0 = first * kTilePixels, pixels = std::min(count_tiles * kTilePixels, DH * DW - pix0);
        T* out = static_cast<T*>(e.out.data) + n * e.out.sn;
        // Row by row: each channel's stretch of a row is written in one run.
        for (int64_t p = 0; p < pixels;) {
          const int64_t row = (pix0 + p) / DW, col = (pix0 + p) % DW, run = std::min(pixels - p, DW - col);
          copy_out_channel_major(stage.data() + p * stage_width, stage_width, run, channels_total,
                                 out + row * e.out.sh + col * e.out.sw, e.out.sc, e.out.sw);
          p += run;
        }
      }
    }
  };
  if (team <= 1) {
    work();
  } else {
#pragma omp parallel num_threads(team)
    work();
  }
}

#include "cpu/conv_direct_rows.h"
#if BIGKERN_CONV_AMX
#include "cpu/conv_amx.h"
#endif

template <typename T>
void forward(const ConvShape& s, const ConvForwardArgs& a) {
  const T* w = static_cast<const T*>(a.weight);
  std::vector<T> bias;
  if (a.bias != nullptr) {  // padded so the vector epilogue may read a whole block past the last channel
    bias.assign(static_cast<size_t>(s.K + kBlock<T>), T(0));
    std::copy_n(static_cast<const T*>(a.bias), s.K, bias.begin());
  }
  Epilogue<T> e{bias.empty() ? nullptr : bias.data(), a.residual, a.out, a.preact, a.activation};
#if BIGKERN_CONV_AMX
  if constexpr (std::is_same_v<T, float>) {
    if (amx_conv_runs(s)) return amx::forward(s, a.input, w, e, a.bfloat16_operands);
  }
#endif
  if (direct_rows_conv(s) && a.input.sw == 1) return direct_rows_forward<T>(s, a.input, w, e);
  const std::vector<T> panel = is_depthwise(s) ? pack_depthwise_panel(w, s) : pack_panels(w, s, false);
  implicit_gemm<T, false>(s, static_cast<const T*>(a.x), panel, e);
}

// grad_z = grad_output * act'(activation_input) (NHWC; without an activation grad_z is
// grad_output itself and nothing is written), its sum per channel (the bias gradient), and the
// pre-activation gradient in the caller's layout.
template <typename T>
void preactivation_gradient(const ConvShape& s, const ConvBackwardArgs& a, const T* gz) {
  constexpr int64_t L = kLanes<T>;
  const int64_t pixels = s.N * s.P * s.Q, K = s.K, full = K / L * L;
  const T* go = static_cast<const T*>(a.grad_output);
  const T* act = static_cast<const T*>(a.activation_input);
  const int64_t workers = worker_count();
  std::vector<T> partial(static_cast<size_t>(workers * (K + L)), T(0));
#pragma omp parallel num_threads(workers)
  {
    const int64_t me = omp_get_thread_num(), team = omp_get_num_threads();
    T* sums = partial.data() + me * (K + L);
    for (int64_t pix = pixels * me / team; pix < pixels * (me + 1) / team; ++pix) {
      const T* row = gz + pix * K;
      if (a.activation == 1) {  // relu: the gradient passes where the output is positive (as torch's)
        T* out = const_cast<T*>(row);  // gz is the kernel's own scratch when there is an activation
        const T* g = go + pix * K;
        const T* y = act + pix * K;
        int64_t k = 0;
        for (; k < full; k += L) vstore(out + k, vload(y + k) > simd_t<T>{} ? vload(g + k) : simd_t<T>{});
        for (; k < K; ++k) out[k] = y[k] > T(0) ? g[k] : T(0);
      } else if (a.activation == 3) {  // silu: sigmoid(z) * (1 + z * (1 - sigmoid(z)))
        T* out = const_cast<T*>(row);
        const T* g = go + pix * K;
        const T* z = act + pix * K;
        int64_t k = 0;
        for (; k < full; k += L) {
          const simd_t<T> zv = vload(z + k), sig = sigmoid_v<T>(zv);
          vstore(out + k, vload(g + k) * (sig * (vsplat(T(1)) + zv * (vsplat(T(1)) - sig))));
        }
        for (; k < K; ++k) out[k] = g[k] * activation_slope(z[k], a.activation);
      } else if (a.activation != 0) {
        T* out = const_cast<T*>(row);
        for (int64_t k = 0; k < K; ++k) out[k] = go[pix * K + k] * activation_slope(act[pix * K + k], a.activation);
      }
      int64_t k = 0;
      for (; k < full; k += L) vstore(sums + k, vload(sums + k) + vload(row + k));
      for (; k < K; ++k) sums[k] += row[k];
      if (a.grad_preact.data != nullptr) {
        const Strided& d = a.grad_preact;
        const int64_t n = pix / (s.P * s.Q), p = (pix / s.Q) % s.P, q = pix % s.Q;
        T* base = static_cast<T*>(d.data) + n * d.sn + p * d.sh + q * d.sw;
        for (int64_t c = 0; c < K; ++c) base[c * d.sc] = row[c];
      }
    }
  }
  if (a.grad_bias != nullptr) {
    T* gb = static_cast<T*>(a.grad_bias);
    for (int64_t k = 0; k < K; ++k) {
      T total = 0;
      for (int64_t w = 0; w < workers; ++w) total += partial[w * (K + L) + k];
      gb[k] = total;
    }
  }
}

// Accumulates one chunk's contribution to dW of one tap and group: rows are the Rows-row tiles
// of gz (packed (px, k_rows) with k_rows a multiple of Rows), columns the Vectors-vector blocks
// of x (wgrad_cols wide) from column c0 of each pixel's row x_rows[p].
template <typename T, int Vectors>
constexpr int64_t wgrad_cols = Vectors * kLanes<T>;

template <typename T, int Rows, int Vectors>
BIGKERN_ATTN_INLINE void wgrad_tile(const T* __restrict__ gz, int64_t k_stride, const T* const* __restrict__ x_rows,
                                    int64_t c0, int64_t px, T* __restrict__ dw, int64_t dw_stride) {
  constexpr int64_t L = kLanes<T>;
  simd_t<T> acc[Rows][Vectors];
#pragma GCC unroll 12
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[i][v] = simd_t<T>{};
  for (int64_t p = 0; p < px; ++p) {
    simd_t<T> xv[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) xv[v] = vload(x_rows[p] + c0 + v * L);
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
      const simd_t<T> b = vsplat(gz[p * k_stride + i]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[i][v] = fmadd(b, xv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) vstore(dw + i * dw_stride + v * L, vload(dw + i * dw_stride + v * L) + acc[i][v]);
}

// dW[c][tap] = sum over pixels of gz[pixel][c] * x[src(pixel, tap)][c]: vectors across channels,
// each thread summing its share of the pixels into its own (taps, channels) partial.
template <typename T>
void depthwise_weight_gradient(const ConvShape& s, const ConvBackwardArgs& a) {
  constexpr int64_t L = kLanes<T>;
  const int64_t RS = s.R * s.S, C = s.C, padded = ceil_div(C, L) * L, full = C / L * L;
  const int64_t pixels = s.N * s.P * s.Q;
  const T* gz = static_cast<const T*>(a.grad_z);
  const T* x = static_cast<const T*>(a.x);
  const int64_t workers = worker_count();
  std::vector<T> partial(static_cast<size_t>(workers * RS * padded), T(0));
#pragma omp parallel num_threads(workers)
  {
    const int64_t me = omp_get_thread_num(), team = omp_get_num_threads();
    T* mine = partial.data() + me * RS * padded;
    for (int64_t pix = pixels * me / team; pix < pixels * (me + 1) / team; ++pix) {
      const int64_t n = pix / (s.P * s.Q), oh = (pix / s.Q) % s.P, ow = pix % s.Q;
      const T* g = gz + pix * C;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t ih = oh * s.stride_h - s.pad_top + r * s.dilation_h;
        if (ih < 0 || ih >= s.H) continue;
        for (int64_t q = 0; q < s.S; ++q) {
          const int64_t iw = ow * s.stride_w - s.pad_left + q * s.dilation_w;
          if (iw < 0 || iw >= s.W) continue;
          const T* xs = x + ((n * s.H + ih) * s.W + iw) * C;
          T* dw = mine + (r * s.S + q) * padded;
          int64_t c = 0;
          for (; c < full; c += L) vstore(dw + c, fmadd(vload(g + c), vload(xs + c), vload(dw + c)));
          for (; c < C; ++c) dw[c] += g[c] * xs[c];
        }
      }
    }
  }
  T* out = static_cast<T*>(a.grad_weight);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t tap = 0; tap < RS; ++tap) {
      T total = 0;
      for (int64_t w = 0; w < workers; ++w) total += partial[(w * RS + tap) * padded + c];
      out[c * RS + tap] = total;
    }
}

// wgrad for few input channels (uses_patches): the columns of dW are all (c, tap) pairs at once,
// each pixel's receptive field packed as one row in dW's own (c, tap) order.
template <typename T>
void patch_weight_gradient(const ConvShape& s, const ConvBackwardArgs& a) {
  const int64_t RS = s.R * s.S, K = s.K, cols = s.C * RS;
  constexpr int64_t kCols = wgrad_cols<T, kPatchWgradVectors>;
  const int64_t k_rows = ceil_div(K, kPatchWgradRows) * kPatchWgradRows, c_cols = ceil_div(cols, kCols) * kCols;
  const int64_t pixels = s.N * s.P * s.Q, chunks = ceil_div(pixels, kChunk);
  const T* gz = static_cast<const T*>(a.grad_z);
  const T* x = static_cast<const T*>(a.x);
  const int64_t workers = std::min(worker_count(), chunks);
  std::vector<T> partial(static_cast<size_t>(workers * k_rows * c_cols), T(0));
#pragma omp parallel num_threads(workers)
  {
    const int64_t me = omp_get_thread_num(), team = omp_get_num_threads();
    std::vector<T> gz_pack(static_cast<size_t>(kChunk * k_rows), T(0)), x_pack(static_cast<size_t>(kChunk * c_cols), T(0));
    std::vector<const T*> x_rows(static_cast<size_t>(kChunk));
    for (int64_t p = 0; p < kChunk; ++p) x_rows[p] = x_pack.data() + p * c_cols;
    T* mine = partial.data() + me * k_rows * c_cols;
    for (int64_t chunk = chunks * me / team; chunk < chunks * (me + 1) / team; ++chunk) {
      const int64_t pix0 = chunk * kChunk, px = std::min(kChunk, pixels - pix0);
      // Pixel coordinates advance without divisions, and a one-channel kernel row that lies inside
      // the input is one copy: with patches gathered element by element and three divisions per
      // pixel, this function took 20% of LeNet-5's training step (its 1 -> 6 channel 5x5 first
      // layer), 12% after.
      int64_t n = pix0 / (s.P * s.Q), oh = pix0 / s.Q % s.P, ow = pix0 % s.Q;
      for (int64_t p = 0; p < px; ++p) {
        std::copy_n(gz + (pix0 + p) * K, K, gz_pack.data() + p * k_rows);
        T* row = x_pack.data() + p * c_cols;
        const int64_t ih0 = oh * s.stride_h - s.pad_top, iw0 = ow * s.stride_w - s.pad_left;
        const bool row_inside = s.C == 1 && s.dilation_w == 1 && iw0 >= 0 && iw0 + s.S - 1 < s.W;
        for (int64_t r = 0; r < s.R; ++r) {
          const int64_t ih = ih0 + r * s.dilation_h;
          const bool ih_inside = ih >= 0 && ih < s.H;
          const T* xs = x + (n * s.H + ih) * s.W * s.C;
          if (ih_inside && row_inside) {
            std::copy_n(xs + iw0, s.S, row + r * s.S);
            continue;
          }
          for (int64_t q = 0; q < s.S; ++q) {
            const int64_t iw = iw0 + q * s.dilation_w;
            const bool inside = ih_inside && iw >= 0 && iw < s.W;
            for (int64_t c = 0; c < s.C; ++c) row[c * RS + r * s.S + q] = inside ? xs[iw * s.C + c] : T(0);
          }
        }
        if (++ow == s.Q) {
          ow = 0;
          if (++oh == s.P) oh = 0, ++n;
        }
      }
      for (int64_t k0 = 0; k0 < k_rows; k0 += kPatchWgradRows)
        for (int64_t c0 = 0; c0 < c_cols; c0 += kCols)
          wgrad_tile<T, kPatchWgradRows, kPatchWgradVectors>(gz_pack.data() + k0, k_rows, x_rows.data(), c0, px,
                                                              mine + k0 * c_cols + c0, c_cols);
    }
  }
  T* out = static_cast<T*>(a.grad_weight);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t col = 0; col < cols; ++col) {
      T total = 0;
      for (int64_t w = 0; w < workers; ++w) total += partial[(w * k_rows + k) * c_cols + col];
      out[k * cols + col] = total;
    }
}

template <typename T>
void weight_gradient(const ConvShape& s, const ConvBackwardArgs& a) {
  const int64_t G = s.groups, Kg = s.K / G, Cg = s.C / G, RS = s.R * s.S;
  constexpr int64_t kCols = wgrad_cols<T, kWgradVectors>;
  const int64_t k_rows = ceil_div(Kg, kWgradRows) * kWgradRows, c_cols = ceil_div(Cg, kCols) * kCols;
  const int64_t pixels = s.N * s.P * s.Q, chunks = ceil_div(pixels, kChunk);
  const int64_t per_thread = G * RS * k_rows * c_cols;
  const T* gz = static_cast<const T*>(a.grad_z);
  const T* x = static_cast<const T*>(a.x);
  const int64_t workers = std::min(worker_count(), chunks);
  // Where a group's channels fill whole column tiles, the tiles read each pixel's input row in
  // place through a pointer (a row of zeros outside the input); otherwise rows are copied into a
  // zero-padded pack, so no vector load runs past a pixel's channels. Copying every row for every
  // tap had been a fifth of the weight gradient's time (3x3, 64 channels).
  const bool in_place = Cg % kCols == 0;
  std::vector<T> partial(static_cast<size_t>(workers * per_thread), T(0));
#pragma omp parallel num_threads(workers)
  {
    const int64_t me = omp_get_thread_num(), team = omp_get_num_threads();
    std::vector<T> gz_pack(static_cast<size_t>(kChunk * k_rows)), x_pack(static_cast<size_t>(in_place ? 0 : kChunk * c_cols));
    std::vector<const T*> x_rows(static_cast<size_t>(kChunk));
    const std::vector<T> zero_row(static_cast<size_t>(c_cols), T(0));
    std::vector<int64_t> source(static_cast<size_t>(kChunk));
    // Each chunk pixel's image and top-left input corner, computed once rather than per tap (the
    // divisions per pixel and tap were 15% of the weight gradient).
    std::vector<int64_t> image(static_cast<size_t>(kChunk)), top(image.size()), left(image.size());
    T* mine = partial.data() + me * per_thread;
    for (int64_t chunk = chunks * me / team; chunk < chunks * (me + 1) / team; ++chunk) {
      const int64_t pix0 = chunk * kChunk, px = std::min(kChunk, pixels - pix0);
      for (int64_t p = 0; p < px; ++p) {
        const int64_t pix = pix0 + p;
        image[p] = pix / (s.P * s.Q);
        top[p] = (pix / s.Q) % s.P * s.stride_h - s.pad_top;
        left[p] = pix % s.Q * s.stride_w - s.pad_left;
      }
      for (int64_t g = 0; g < G; ++g) {
        std::fill(gz_pack.begin(), gz_pack.end(), T(0));
        for (int64_t p = 0; p < px; ++p)
          std::memcpy(gz_pack.data() + p * k_rows, gz + (pix0 + p) * s.K + g * Kg, sizeof(T) * Kg);
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t q = 0; q < s.S; ++q) {
            bool any = false;
            for (int64_t p = 0; p < px; ++p) {
              const int64_t ih = top[p] + r * s.dilation_h, iw = left[p] + q * s.dilation_w;
              const bool inside = ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
              source[p] = inside ? (image[p] * s.H + ih) * s.W + iw : -1;
              any |= inside;
            }
            if (!any) continue;
            for (int64_t p = 0; p < px; ++p) {
              if (in_place) {
                x_rows[p] = source[p] < 0 ? zero_row.data() : x + source[p] * s.C + g * Cg;
                continue;
              }
              T* row = x_pack.data() + p * c_cols;
              x_rows[p] = row;
              if (source[p] < 0) {
                std::fill(row, row + c_cols, T(0));
              } else {
                std::memcpy(row, x + source[p] * s.C + g * Cg, sizeof(T) * Cg);
                std::fill(row + Cg, row + c_cols, T(0));
              }
            }
            T* dw = mine + (g * RS + r * s.S + q) * k_rows * c_cols;
            for (int64_t k0 = 0; k0 < k_rows; k0 += kWgradRows)
              for (int64_t c0 = 0; c0 < c_cols; c0 += kCols)
                wgrad_tile<T, kWgradRows, kWgradVectors>(gz_pack.data() + k0, k_rows, x_rows.data(), c0, px,
                                                          dw + k0 * c_cols + c0, c_cols);
          }
      }
    }
  }
  T* out = static_cast<T*>(a.grad_weight);
  at::parallel_for(0, s.K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t g = k / Kg, kk = k % Kg;
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t tap = 0; tap < RS; ++tap) {
          T total = 0;
          for (int64_t w = 0; w < workers; ++w)
            total += partial[w * per_thread + ((g * RS + tap) * k_rows + kk) * c_cols + c];
          out[(k * Cg + c) * RS + tap] = total;
        }
    }
  });
}

template <typename T>
void backward(const ConvShape& s, const ConvBackwardArgs& args) {
  if (args.input_rows.data != nullptr) return direct_rows_weight_gradient<T>(s, args);
  ConvBackwardArgs a = args;
  if (a.activation == 0) a.grad_z = const_cast<void*>(a.grad_output);  // read-only from here on
  preactivation_gradient<T>(s, a, static_cast<const T*>(a.grad_z));
  if (a.grad_input.data != nullptr) {
    const T* w = static_cast<const T*>(a.weight);
    bool on_tiles = false;
#if BIGKERN_CONV_AMX
    if constexpr (std::is_same_v<T, float>) on_tiles = amx::input_gradient(s, static_cast<const T*>(a.grad_z), w, a.grad_input);
#endif
    if (!on_tiles) {
      const std::vector<T> panel = is_depthwise(s) ? pack_depthwise_panel(w, s) : pack_panels(w, s, true);
      Epilogue<T> e;
      e.out = a.grad_input;
      implicit_gemm<T, true>(s, static_cast<const T*>(a.grad_z), panel, e);
    }
  }
  if (a.grad_weight != nullptr) {
    if (is_depthwise(s)) depthwise_weight_gradient<T>(s, a);
    else if (uses_patches(s)) patch_weight_gradient<T>(s, a);
    else weight_gradient<T>(s, a);
  }
}

}  // namespace conv_detail

void conv_forward(const ConvShape& s, const ConvForwardArgs& a, bool is_double) {
  if (is_double) conv_detail::forward<double>(s, a);
  else conv_detail::forward<float>(s, a);
}

void conv_backward(const ConvShape& s, const ConvBackwardArgs& a, bool is_double) {
  if (is_double) conv_detail::backward<double>(s, a);
  else conv_detail::backward<float>(s, a);
}

const ConvKernelTable& conv_kernels() {
  static const ConvKernelTable table{conv_forward, conv_backward};
  return table;
}
