// Host-side tensors for the emulated CUDA attention kernels: 16-byte aligned storage of 16-bit
// elements, (B, H, L, D) layouts (contiguous or the (B, L, H, D) permutation models produce),
// conversions, and random operands. Shared by the forward and backward emulation programs.
#pragma once
#include <cuda_runtime.h>  // the emulator's stand-in: uint4

#include <cstdint>
#include <random>
#include <vector>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/sm80_primitives.cuh"  // the emulator's stand-in: emu:: conversions

namespace bigkern::cuda_attention::emulated {

// 16-byte aligned storage of 16-bit elements.
struct Buffer {
  std::vector<uint4> storage;
  explicit Buffer(size_t elements) : storage((elements * 2 + 15) / 16 + 1) {}
  uint16_t* data() { return reinterpret_cast<uint16_t*>(storage.data()); }
  const uint16_t* data() const { return reinterpret_cast<const uint16_t*>(storage.data()); }
};

struct Layout {
  int64_t size[4];
  int64_t stride[4];
  int64_t offset(int64_t b, int64_t h, int64_t i, int64_t d) const {
    return b * stride[0] + h * stride[1] + i * stride[2] + d * stride[3];
  }
};

inline Layout make_layout(int64_t batch, int64_t heads, int64_t len, int64_t dim, bool permuted) {
  if (permuted) return {{batch, heads, len, dim}, {len * heads * dim, dim, heads * dim, 1}};
  return {{batch, heads, len, dim}, {heads * len * dim, len * dim, dim, 1}};
}

inline double to_double(ElementType t, uint16_t bits) {
  return t == ElementType::kFloat16 ? emu::half_bits_to_float(bits) : emu::bfloat16_bits_to_float(bits);
}
inline uint16_t from_double(ElementType t, double x) {
  const float f = static_cast<float>(x);
  return t == ElementType::kFloat16 ? emu::float_to_half_bits(f) : emu::float_to_bfloat16_bits(f);
}

// A (B, H, L, D) tensor of the case's dtype, random normal values (standard deviation `scale`)
// rounded to the dtype.
struct Operand {
  Layout layout;
  Buffer buffer;
  Operand(const Layout& l, ElementType t, std::mt19937_64& rng, double scale = 1.0)
      : layout(l), buffer(static_cast<size_t>(l.size[0] * l.size[1] * l.size[2] * l.size[3])) {
    std::normal_distribution<double> normal(0.0, scale);
    for (int64_t b = 0; b < l.size[0]; ++b)
      for (int64_t h = 0; h < l.size[1]; ++h)
        for (int64_t i = 0; i < l.size[2]; ++i)
          for (int64_t d = 0; d < l.size[3]; ++d) buffer.data()[l.offset(b, h, i, d)] = from_double(t, normal(rng));
  }
  double at(ElementType t, int64_t b, int64_t h, int64_t i, int64_t d) const {
    return to_double(t, buffer.data()[layout.offset(b, h, i, d)]);
  }
};

}  // namespace bigkern::cuda_attention::emulated
