// The float32 convolution forward on the AMX tile unit (Sapphire Rapids and later Xeons), for
// layers of at least 16 input and 16 output channels per group. Included by conv_kernels.h in the
// AVX-512 build (BIGKERN_CONV_AMX) and called by its forward when amx_tiles_ready() (cpu/isa.h).
//
// Float32 from bfloat16 products. The tile unit multiplies bfloat16 pairs and accumulates in
// float32 (TDPBF16PS: C[m][16] += A[m][32] . B[32][16], 16 x 16 x 32 products per instruction,
// 16x the AVX-512 FMA units' rate). Every float is split into three bfloat16 parts, each the top
// 16 bits of what the previous parts left (v = v0 + v1 + v2 exactly: 3 x 8 significant bits), and
// the product x * w is the six partial products whose size reaches float32's precision:
// x0 w0 + (x0 w1 + x1 w0) + (x0 w2 + x1 w1 + x2 w0). Each is exact in float32; the three dropped
// (x1 w2, x2 w1, x2 w2) are below 2^-21 of the product. x0 w0 accumulates in its own tiles and
// the five small terms (2^-7 of it and less) in another pair, added in the epilogue, so the
// running sum that carries the rounding error has as many additions as a plain float32 dot
// product: tests/ops/test_conv_amx.py holds the error against float64 to twice torch's.
// Six products for one still leave the tile unit 2.7x the FMA units' peak (measured here:
// 5.6 ns per TDPBF16PS, 3 TFLOP/s bfloat16 per core).
//
// Layout. The input (read through its strides: 16-channel loads where channels are contiguous,
// 16-channel gathers otherwise, so NCHW needs no conversion pass) is split, in batches of images
// whose parts stay under 64 MB, into a zero-padded channels-last buffer of bfloat16 parts:
// [N][Hp][Wp][groups][chunks][3 parts][32 channels], Hp x Wp the rows and columns the taps
// read (padding included, so no tap ever needs a bounds check) and chunks the group's channels in
// 32s (zero past the last). A tile row is then 64 contiguous bytes: one pixel's 32 channels of one
// part, and a tile of m output pixels is m such rows a fixed stride apart, for every tap, stride
// and dilation. The weight is packed into 1 KiB tiles in the order the loop reads them:
// [groups][32-channel output passes][taps][chunks][2 column blocks][3 parts][16 pairs][16][2]
// (TDPBF16PS wants each column's consecutive reduction channels side by side).
//
// Tiles over output pixels. At stride 1 the padded input's flat index is the output's flat index
// over a Wp-wide grid plus a per-tap constant, so a tile runs over 16 consecutive positions of
// that grid across row ends; the (S-1) x dilation positions past each row's last output column
// are computed and dropped (3% at 56 columns, where tiles confined to a row would hold 14 of 16).
// Otherwise (stride > 1) tiles stay in a row: ceil(Q / tiles) pixels each, the last one moved back
// to end at the row's end (recomputing a few pixels rather than running a short tile).
//
// Registers: tiles 0, 1 the x0 w0 sums of two 16-channel column blocks, 2, 3 the small terms',
// 4-6 the input parts, 7 the weight part in use. The output passes over 32 channels at a time;
// after each tile's pass its sums go through the shared epilogue (store_tile: bias, residual,
// activation, pre-activation, NCHW staging), six pixels at a time.
//
// Also here: bfloat16 operands in one part (one product instead of six), and the input gradient
// at stride 1 as this forward with the kernel flipped (input_gradient, at the end).

namespace amx {

constexpr int64_t kChunk = 32;  // reduction channels per tile row: 32 bfloat16 = 64 bytes
constexpr int64_t kColumns = 16;  // output channels per accumulator tile: 16 float32 = 64 bytes
constexpr int64_t kPass = 2 * kColumns;  // output channels per pass over the reduction
constexpr int64_t kParts = 3;
constexpr int64_t kTileElems = 16 * 32;  // bfloat16 per 1 KiB operand tile
constexpr int kMaxRows = 16;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Top 16 bits of each float (a bfloat16 by truncation, as a float).
BIGKERN_ATTN_INLINE __m512 high_half(__m512 v) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// (The all-lanes maskz forms: GCC 12 warns about the unmasked forms' undefined pass-through.)
BIGKERN_ATTN_INLINE __m256i bfloat16_bits(__m512 v) {
  return _mm512_maskz_cvtepi32_epi16(0xFFFF, _mm512_maskz_srli_epi32(0xFFFF, _mm512_castps_si512(v), 16));
}

// v = p0 + p1 + p2 for finite v. Infinities stay whole in p0 (with zero p1, p2, so inf * w is inf,
// not inf - inf = nan); NaNs become a quiet NaN in p0 (truncating a NaN's payload could leave inf).
BIGKERN_ATTN_INLINE void split_parts(__m512 v, __m256i (&parts)[kParts]) {
  constexpr int kNan = 0x01 | 0x80, kInf = 0x08 | 0x10;  // fpclass: quiet/signalling NaN, +/- infinity
  const __mmask16 nan = _mm512_fpclass_ps_mask(v, kNan), special = nan | _mm512_fpclass_ps_mask(v, kInf);
  const __m512 p0 = _mm512_mask_mov_ps(high_half(v), nan, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  const __m512 r1 = _mm512_maskz_sub_ps(static_cast<__mmask16>(~special), v, p0);
  const __m512 p1 = high_half(r1);
  const __m512 p2 = high_half(_mm512_sub_ps(r1, p1));
  parts[0] = bfloat16_bits(p0), parts[1] = bfloat16_bits(p1), parts[2] = bfloat16_bits(p2);
}

// Splits n floats into parts[t][i] (see split_parts), 16 at a time.
inline void split_array(const float* v, int64_t n, uint16_t* const (&parts)[kParts]) {
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t count = std::min<int64_t>(16, n - i);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
    __m256i split[kParts];
    split_parts(_mm512_maskz_loadu_ps(mask, v + i), split);
    for (int t = 0; t < kParts; ++t) _mm256_mask_storeu_epi16(parts[t] + i, mask, split[t]);
  }
}

// The x0 w0 sums plus the small terms'. Where the main sum is not finite (an inf or nan input,
// or overflow) it is the result alone: the small terms of inf * w carry the signs of w's lower
// parts, and inf - inf there would turn torch's inf into nan.
BIGKERN_ATTN_INLINE simd_t<float> combine(simd_t<float> main, simd_t<float> small) {
  constexpr int kNonFinite = 0x01 | 0x80 | 0x08 | 0x10;
  const __m512 m = (__m512)main;
  return (simd_t<float>)_mm512_mask_mov_ps(_mm512_add_ps(m, (__m512)small), _mm512_fpclass_ps_mask(m, kNonFinite), m);
}

// Operand buffers start on a cache line: a tile row is 64 bytes, and rows straddling two lines
// made the whole forward 35-40% slower in processes whose allocations happened to be misaligned.
struct FreeAligned {
  void operator()(uint16_t* p) const { std::free(p); }
};
using TileBuffer = std::unique_ptr<uint16_t[], FreeAligned>;

inline TileBuffer tile_buffer(int64_t elems) {
  const size_t bytes = (static_cast<size_t>(elems) * sizeof(uint16_t) + 63) / 64 * 64;
  auto* p = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
  TORCH_CHECK(p != nullptr, "bigkern::conv2d: could not allocate ", bytes, " bytes for the AMX operand buffers");
  return TileBuffer(p);
}

struct Plan {
  int64_t Hp, Wp;       // padded input rows and columns
  int64_t chunks;       // 32-channel reduction chunks per group
  int parts;            // 3, or 1 where input and weight are bfloat16 already (exact in one part)
  int64_t pixel;        // bfloat16 per padded pixel: groups x chunks x parts x 32
  int64_t passes;       // 32-channel output passes per group
  bool flat;            // stride 1: tiles run over a Wp-wide grid across row ends
  int64_t grid_width;   // Wp when flat, else Q
  int rows;             // output pixels per tile (m)
  int64_t band;         // output rows per work item
};

inline Plan plan(const ConvShape& s, bool bfloat16_operands) {
  Plan p{};
  p.parts = bfloat16_operands ? 1 : kParts;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  p.Hp = (s.P - 1) * s.stride_h + (s.R - 1) * s.dilation_h + 1;
  p.Wp = (s.Q - 1) * s.stride_w + (s.S - 1) * s.dilation_w + 1;
  p.chunks = ceil_div(Cg, kChunk);
  p.pixel = s.groups * p.chunks * p.parts * kChunk;
  p.passes = ceil_div(Kg, kPass);
  p.flat = s.stride_h == 1 && s.stride_w == 1;
  p.grid_width = p.flat ? p.Wp : s.Q;
  if (p.flat) {
    p.rows = static_cast<int>(std::min<int64_t>(kMaxRows, s.P * p.Wp));
  } else {
    p.rows = static_cast<int>(ceil_div(s.Q, ceil_div(s.Q, kMaxRows)));
  }
  // About 1024 output pixels per work item (an item's last tile is moved back and recomputes
  // pixels: with 256-pixel items that was 4% of the tiles, and 2-thread runs were 13% slower),
  // but at least 4 items per thread where the layer has them.
  p.band = std::min(s.P, ceil_div(1024, s.Q));
  while (p.band > 1 && s.N * ceil_div(s.P, p.band) < 4 * worker_count()) p.band = ceil_div(p.band, 2);
  return p;
}

// x (N, C, H, W) float through its strides -> the padded part buffer (see the layout above), rows
// of the padded input split between threads; `slack` trailing pixels are zeroed for the flat
// tiles' last reads past the final row. Channels-last input is read 16 channels per load; any
// other layout (NCHW: one plane per channel) 16 channels per gather, so an NCHW input needs no
// conversion pass of its own (conv.cpp passes it as it is when 15 channel strides fit in int32).
inline void split_input(const ConvShape& s, const Plan& p, const Strided& x, uint16_t* parts, int64_t slack) {
  const int64_t Cg = s.C / s.groups, rows = s.N * p.Hp, row_elems = p.Wp * p.pixel;
  const float* data = static_cast<const float*>(x.data);
  const __m512i channel_offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(x.sc)));
  const int64_t team = std::min(worker_count(), rows);
  auto split_row = [&](int64_t row) {
    uint16_t* dst = parts + row * row_elems;
    const int64_t n = row / p.Hp, h = row % p.Hp - s.pad_top;
    if (h < 0 || h >= s.H) {
      std::memset(dst, 0, row_elems * sizeof(uint16_t));
      return;
    }
    for (int64_t col = 0; col < p.Wp; ++col, dst += p.pixel) {
      const int64_t w = col - s.pad_left;
      if (w < 0 || w >= s.W) {
        std::memset(dst, 0, p.pixel * sizeof(uint16_t));
        continue;
      }
      const float* src = data + n * x.sn + h * x.sh + w * x.sw;
      uint16_t* out = dst;
      for (int64_t g = 0; g < s.groups; ++g)
        for (int64_t ch = 0; ch < p.chunks; ++ch, out += p.parts * kChunk)
          for (int64_t half = 0; half < kChunk; half += 16) {
            const int64_t c0 = ch * kChunk + half, count = std::clamp<int64_t>(Cg - c0, 0, 16);
            const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
            const float* from = src + (g * Cg + std::min(c0, Cg)) * x.sc;
            const __m512 v = x.sc == 1 ? _mm512_maskz_loadu_ps(mask, from)
                                       : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, channel_offsets, from, 4);
            __m256i split[kParts];
            split_parts(v, split);
            for (int t = 0; t < p.parts; ++t)
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + t * kChunk + half), split[t]);
          }
    }
  };
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
  for (int64_t row = 0; row < rows; ++row) split_row(row);
  std::memset(parts + rows * row_elems, 0, slack * p.pixel * sizeof(uint16_t));
}

// w (K, C/G, R, S) -> operand tiles, in the order tile_pass reads them (see the layout above).
// The weights are split first, 16 at a time, then scattered into the tiles.
inline TileBuffer pack_weight(const ConvShape& s, const Plan& p, const float* w) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, RS = s.R * s.S, total = s.K * Cg * RS;
  std::vector<uint16_t> split(static_cast<size_t>(kParts * total));
  uint16_t* const parts[kParts] = {split.data(), split.data() + total, split.data() + 2 * total};
  split_array(w, total, parts);
  const int64_t items = s.groups * p.passes * RS;  // (group, pass, tap): 2 x 3 x chunks tiles each
  const int64_t item_elems = p.chunks * 2 * p.parts * kTileElems;
  TileBuffer packed = tile_buffer(items * item_elems);
  const int64_t team = std::min(worker_count(), items);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t g = item / (p.passes * RS), pass = item / RS % p.passes, tap = item % RS;
    uint16_t* dst = packed.get() + item * item_elems;
    for (int64_t ch = 0; ch < p.chunks; ++ch)
      for (int64_t block = 0; block < 2; ++block)
        for (int t = 0; t < p.parts; ++t, dst += kTileElems)
          for (int64_t pair = 0; pair < 16; ++pair)
            for (int64_t col = 0; col < kColumns; ++col)
              for (int64_t e = 0; e < 2; ++e) {
                const int64_t k = pass * kPass + block * kColumns + col, c = ch * kChunk + 2 * pair + e;
                dst[(pair * kColumns + col) * 2 + e] = k < Kg && c < Cg ? parts[t][((g * Kg + k) * Cg + c) * RS + tap] : 0;
              }
  }
  return packed;
}

// One tile of output pixels x 32 output channels over the whole reduction (taps x chunks):
// a points at the tile's first pixel in the part buffer, a_stride the bytes between its pixels,
// b at the pass's weight tiles. Leaves the sums in tiles 0-3. kSplit is the plan's parts: with
// one (bfloat16 operands) only the x0 w0 products exist.
template <int kSplit>
BIGKERN_ATTN_INLINE void tile_pass(const char* a, int64_t a_stride, const int64_t* tap_offsets, int64_t taps,
                                   int64_t chunks, const uint16_t* b, bool second_block) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  constexpr int64_t kPartBytes = kChunk * 2;
  for (int64_t tap = 0; tap < taps; ++tap) {
    const char* at = a + tap_offsets[tap];
    for (int64_t ch = 0; ch < chunks; ++ch, at += kSplit * kPartBytes, b += 2 * kSplit * kTileElems) {
      const uint16_t* b1 = b + kSplit * kTileElems;
      _tile_loadd(4, at, a_stride);
      _tile_loadd(7, b, 64);
      _tile_dpbf16ps(0, 4, 7);  // x0 w0
      if constexpr (kSplit == 1) {
        if (!second_block) continue;
        _tile_loadd(7, b1, 64);
        _tile_dpbf16ps(1, 4, 7);
        continue;
      }
      _tile_loadd(5, at + kPartBytes, a_stride);
      _tile_loadd(6, at + 2 * kPartBytes, a_stride);
      _tile_dpbf16ps(2, 5, 7);  // x1 w0
      _tile_dpbf16ps(2, 6, 7);  // x2 w0
      _tile_loadd(7, b + kTileElems, 64);
      _tile_dpbf16ps(2, 4, 7);  // x0 w1
      _tile_dpbf16ps(2, 5, 7);  // x1 w1
      _tile_loadd(7, b + 2 * kTileElems, 64);
      _tile_dpbf16ps(2, 4, 7);  // x0 w2
      if (!second_block) continue;
      _tile_loadd(7, b1, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
      _tile_dpbf16ps(3, 6, 7);
      _tile_loadd(7, b1 + kTileElems, 64);
      _tile_dpbf16ps(3, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
      _tile_loadd(7, b1 + 2 * kTileElems, 64);
      _tile_dpbf16ps(3, 4, 7);
    }
  }
}

// bfloat16_operands: x and w hold bfloat16 values (the op's bfloat16 inputs, widened by conv.cpp),
// which are their own first part: one product per multiply instead of six.
inline void forward(const ConvShape& s, const Strided& x, const float* w, const Epilogue<float>& e,
                    bool bfloat16_operands) {
  const Plan p = plan(s, bfloat16_operands);
  const int64_t Kg = s.K / s.groups, RS = s.R * s.S;
  // Flat tiles read up to (S-1) x dilation pixels past the last padded row (dropped positions).
  const int64_t slack = p.flat ? (s.S - 1) * s.dilation_w + 1 : 0;
  const int64_t image = p.Hp * p.Wp * p.pixel;
  // Images are split and computed in batches whose part buffer stays under kPartsBudget (the parts
  // take 1.5x the input's float32 bytes: 300 MB for a 64 x 256 x 56 x 56 batch otherwise).
  constexpr int64_t kPartsBudget = int64_t{64} << 20;
  const int64_t batch = std::clamp<int64_t>(kPartsBudget / (image * 2), 1, s.N);
  const TileBuffer parts = tile_buffer(batch * image + slack * p.pixel);
  const TileBuffer packed = pack_weight(s, p, w);
  std::vector<int64_t> tap_offsets(static_cast<size_t>(RS));
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t q = 0; q < s.S; ++q)
      tap_offsets[r * s.S + q] = (r * s.dilation_h * p.Wp + q * s.dilation_w) * p.pixel * 2;
  const int64_t a_stride = s.stride_w * p.pixel * 2;
  const int64_t pass_elems = RS * p.chunks * 2 * p.parts * kTileElems;

  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = static_cast<uint8_t>(t == 7 ? 16 : p.rows);
  }
  const bool staged = e.out.sc != 1;
  const int64_t channels_total = s.K, stage_width = channels_total + kBlock<float>;
  for (int64_t n0 = 0; n0 < s.N; n0 += batch) {
    ConvShape images = s;
    images.N = std::min(batch, s.N - n0);
    Strided x_images = x;
    x_images.data = static_cast<float*>(x.data) + n0 * x.sn;
    split_input(images, p, x_images, parts.get(), slack);
    const int64_t bands = ceil_div(s.P, p.band), items = images.N * bands;
    const int64_t team = std::min(worker_count(), items);
    std::atomic<int64_t> next_item{0};
    auto work = [&]() {
      _tile_loadconfig(&config);
      alignas(64) float sums[4][kMaxRows][kColumns];
      std::vector<float> stage(staged ? static_cast<size_t>(p.band * s.Q * stage_width) : 0);
      const Strided stage_dst{stage.data(), 0, 1, s.Q * stage_width, stage_width};
      for (int64_t item = next_item++; item < items; item = next_item++) {
        const int64_t n = n0 + item / bands, p0 = item % bands * p.band, p1 = std::min(s.P, p0 + p.band);
        const char* image_parts = reinterpret_cast<const char*>(parts.get() + (n - n0) * image);
        // Stores rows [from, to) of the tile starting at grid position j0: runs of consecutive
        // output pixels, at most kTilePixels each, through store_tile.
        auto store = [&](int64_t j0, int from, int to, int64_t ch0, int64_t count) {
          simd_t<float> acc[kTilePixels][kVectors];
          for (int i = from; i < to;) {
            const int64_t j = j0 + i, row = j / p.grid_width, col = j % p.grid_width;
            if (col >= s.Q) {
              ++i;
              continue;
            }
            const int px = static_cast<int>(std::min<int64_t>({kTilePixels, to - i, s.Q - col}));
            for (int k = 0; k < px; ++k)
              for (int v = 0; v < 2; ++v) acc[k][v] = combine(vload(sums[v][i + k]), vload(sums[2 + v][i + k]));
            const int64_t pix0 = row * s.Q + col;
            if (staged) store_tile<float>(acc, px, n, pix0, s.Q, ch0, count, e, stage_dst, -p0 * s.Q * stage_width);
            else store_tile<float>(acc, px, n, pix0, s.Q, ch0, count, e, e.out, 0);
            i += px;
          }
        };
        // Grid positions [lo, hi) in tiles of p.rows; the last tile moves back to end at hi.
        auto run = [&](int64_t lo, int64_t hi, const char* a, const uint16_t* b, bool second_block, int64_t ch0,
                       int64_t count) {
          for (int64_t done = lo; done < hi;) {
            const int64_t j0 = std::max<int64_t>(0, std::min(done, hi - p.rows));
            const int64_t row = j0 / p.grid_width, col = j0 % p.grid_width;
            const int64_t pixel_index = p.flat ? j0 : row * s.stride_h * p.Wp + col * s.stride_w;
            const char* first = a + pixel_index * p.pixel * 2;
            if (p.parts == 1) tile_pass<1>(first, a_stride, tap_offsets.data(), RS, p.chunks, b, second_block);
            else tile_pass<kParts>(first, a_stride, tap_offsets.data(), RS, p.chunks, b, second_block);
            _tile_stored(0, sums[0], 64);  // tile numbers are instruction immediates
            _tile_stored(1, sums[1], 64);
            _tile_stored(2, sums[2], 64);
            _tile_stored(3, sums[3], 64);
            store(j0, static_cast<int>(done - j0), static_cast<int>(std::min<int64_t>(p.rows, hi - j0)), ch0, count);
            done = j0 + p.rows;
          }
        };
        for (int64_t g = 0; g < s.groups; ++g)
          for (int64_t pass = 0; pass < p.passes; ++pass) {
            const char* a = image_parts + g * p.chunks * p.parts * kChunk * 2;
            const uint16_t* b = packed.get() + (g * p.passes + pass) * pass_elems;
            const int64_t count = std::min(kPass, Kg - pass * kPass), ch0 = g * Kg + pass * kPass;
            if (p.flat) {
              run(p0 * p.grid_width, p1 * p.grid_width, a, b, count > kColumns, ch0, count);
            } else {
              for (int64_t row = p0; row < p1; ++row) run(row * s.Q, (row + 1) * s.Q, a, b, count > kColumns, ch0, count);
            }
          }
        if (staged) {
          float* out = static_cast<float*>(e.out.data) + n * e.out.sn;
          for (int64_t row = p0; row < p1; ++row)
            copy_out_channel_major(stage.data() + (row - p0) * s.Q * stage_width, stage_width, s.Q, channels_total,
                                   out + row * e.out.sh, e.out.sc, e.out.sw);
        }
      }
      _tile_release();
    };
    if (team <= 1) {
      work();
    } else {
#pragma omp parallel num_threads(team)
      work();
    }
  }
}

// The input gradient at stride 1 is the forward convolution of the output gradient gz (N, P, Q, K)
// with the kernel flipped and its channel roles exchanged: dx[h][w][c] = sum over k, r, s of
// gz[h + top - r*dil][w + left - s*dil][k] * w[k][c][r][s], i.e. a forward with padding
// dil*(R-1) - top (negative padding crops: the part buffer's rows start inside gz). Returns false
// (the AVX-512 dgrad runs) for other strides, which would need gz dilated by zeros, and for
// layers outside amx_conv_runs.
inline bool input_gradient(const ConvShape& s, const float* gz, const float* w, const Strided& grad_input) {
  if (s.stride_h != 1 || s.stride_w != 1) return false;
  ConvShape t = s;
  t.C = s.K, t.K = s.C, t.H = s.P, t.W = s.Q, t.P = s.H, t.Q = s.W;
  t.pad_top = s.dilation_h * (s.R - 1) - s.pad_top, t.pad_left = s.dilation_w * (s.S - 1) - s.pad_left;
  if (!amx_conv_runs(t)) return false;
  const int64_t G = s.groups, Cg = s.C / G, Kg = s.K / G, RS = s.R * s.S;
  std::vector<float> flipped(static_cast<size_t>(s.C * Kg * RS));  // (C, K/G, R, S)
  for (int64_t g = 0; g < G; ++g)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t tap = 0; tap < RS; ++tap)
          flipped[((g * Cg + c) * Kg + k) * RS + tap] = w[((g * Kg + k) * Cg + c) * RS + (RS - 1 - tap)];
  Epilogue<float> e;
  e.out = grad_input;
  forward(t, Strided{const_cast<float*>(gz), s.P * s.Q * s.K, 1, s.Q * s.K, s.K}, flipped.data(), e, false);
  return true;
}

}  // namespace amx
