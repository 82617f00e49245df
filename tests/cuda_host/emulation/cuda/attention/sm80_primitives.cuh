// Emulated stand-in for csrc/cuda/attention/sm80_primitives.cuh (same names and signatures). The
// include path puts tests/cuda_host/emulation before csrc, so the kernel headers pick this one up
// when compiled as host C++ for the SIMT emulator (../../simt.h).
//
// The instruction semantics below are written from the PTX ISA, independently of
// csrc/cuda/attention/fragment_layout.h (which the kernels use to address the operands), so a
// mistake in either shows up as a wrong result:
//   mma.m16n8k16 .f16/.bf16 -> .f32 ("Matrix Fragments for mma.m16n8k16 with floating point
//   type"), with groupID = lane >> 2, threadID_in_group = lane % 4:
//     A a0..a7 (register r holds a_2r low, a_2r+1 high): row = groupID for i in {0,1,4,5} else
//       groupID + 8; col = 2 * threadID_in_group + (i & 1), + 8 for i >= 4
//     B b0..b3: row = 2 * threadID_in_group + (i & 1), + 8 for i >= 2; col = groupID
//     C/D c0..c3: row = groupID, + 8 for i >= 2; col = 2 * threadID_in_group + (i & 1)
//   ldmatrix.m8n8.x{1,2,4}[.trans].b16: lanes 8m..8m+7 give the row addresses of matrix m;
//     register m of lane l holds elements (l / 4, 2 * (l % 4)) and (l / 4, 2 * (l % 4) + 1), low
//     half first; with .trans (2 * (l % 4), l / 4) and (2 * (l % 4) + 1, l / 4).
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/fragment_layout.h"

#define BIGKERN_UNROLL
#define BIGKERN_NO_UNROLL

namespace emu {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline float half_bits_to_float(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}
inline uint16_t float_to_half_bits(float x) {  // round to nearest even (the compiler's conversion)
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
inline float bfloat16_bits_to_float(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &word, 4);
  return x;
}
inline uint16_t float_to_bfloat16_bits(float x) {  // round to nearest even
  uint32_t word;
  std::memcpy(&word, &x, 4);
  if ((word & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((word >> 16) | 0x40u);  // quiet NaN
  word += 0x7FFFu + ((word >> 16) & 1u);
  return static_cast<uint16_t>(word >> 16);
}

inline void check_ldmatrix_row(const void* row) {
  const Machine& m = machine();
  const auto* p = static_cast<const unsigned char*>(row);
  if (p < m.shared || p + 16 > m.shared + m.shared_size) fail("ldmatrix row outside shared memory");
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0) fail("ldmatrix row not 16-byte aligned");
}

template <int kMatrices>
std::array<uint32_t, 4> ldmatrix(const void* row, bool transposed) {
  const uint32_t full = 0xFFFFFFFFu;
  return warp_collective<const void*, std::array<uint32_t, 4>>(
      transposed ? 10 + kMatrices : 20 + kMatrices, full, row,
      [transposed](const std::array<const void*, 32>& rows, std::array<std::array<uint32_t, 4>, 32>& out, uint32_t) {
        for (int l = 0; l < 8 * kMatrices; ++l) check_ldmatrix_row(rows[l]);
        for (int lane = 0; lane < 32; ++lane) {
          for (int m = 0; m < kMatrices; ++m) {
            uint16_t half[2];
            for (int h = 0; h < 2; ++h) {
              const int r = transposed ? 2 * (lane % 4) + h : lane / 4;
              const int c = transposed ? lane / 4 : 2 * (lane % 4) + h;
              std::memcpy(&half[h], static_cast<const unsigned char*>(rows[8 * m + r]) + 2 * c, 2);
            }
            out[lane][m] = static_cast<uint32_t>(half[0]) | static_cast<uint32_t>(half[1]) << 16;
          }
        }
      });
}

struct MmaInput {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

inline std::array<float, 4> mma_m16n8k16(const MmaInput& input, bool bf16) {
  return warp_collective<MmaInput, std::array<float, 4>>(
      bf16 ? 31 : 30, 0xFFFFFFFFu, input,
      [bf16](const std::array<MmaInput, 32>& in, std::array<std::array<float, 4>, 32>& out, uint32_t) {
        const auto element = [bf16](uint32_t reg, int h) {
          const uint16_t bits = static_cast<uint16_t>(reg >> (16 * h));
          return static_cast<double>(bf16 ? bfloat16_bits_to_float(bits) : half_bits_to_float(bits));
        };
        double a[16][16], b[16][8], c[16][8];
        int seen_a = 0, seen_b = 0;
        for (int lane = 0; lane < 32; ++lane) {
          const int group = lane >> 2, tid = lane % 4;
          for (int i = 0; i < 8; ++i) {
            const bool low_rows = i < 2 || (i >= 4 && i < 6);
            const int row = group + (low_rows ? 0 : 8);
            const int col = 2 * tid + (i & 1) + (i >= 4 ? 8 : 0);
            a[row][col] = element(in[lane].a[i >> 1], i & 1);
            ++seen_a;
          }
          for (int i = 0; i < 4; ++i) {
            b[2 * tid + (i & 1) + (i >= 2 ? 8 : 0)][group] = element(in[lane].b[i >> 1], i & 1);
            ++seen_b;
          }
          for (int i = 0; i < 4; ++i) c[group + (i >= 2 ? 8 : 0)][2 * tid + (i & 1)] = in[lane].c[i];
        }
        if (seen_a != 256 || seen_b != 128) fail("mma fragment tables");
        for (int lane = 0; lane < 32; ++lane) {
          const int group = lane >> 2, tid = lane % 4;
          for (int i = 0; i < 4; ++i) {
            const int row = group + (i >= 2 ? 8 : 0), col = 2 * tid + (i & 1);
            double sum = c[row][col];
            for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
            out[lane][i] = static_cast<float>(sum);
          }
        }
      });
}

}  // namespace emu

namespace bigkern::cuda_attention {

template <ElementType kType>
struct ElementTraits;

template <>
struct ElementTraits<ElementType::kFloat16> {
  using type = emu::Half;
  static float to_float(type x) { return emu::half_bits_to_float(x.bits); }
  static type from_float(float x) { return {emu::float_to_half_bits(x)}; }
};

template <>
struct ElementTraits<ElementType::kBFloat16> {
  using type = emu::BFloat16;
  static float to_float(type x) { return emu::bfloat16_bits_to_float(x.bits); }
  static type from_float(float x) { return {emu::float_to_bfloat16_bits(x)}; }
};

template <ElementType kType>
using element_t = typename ElementTraits<kType>::type;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

inline void cp_async_16(void* dst_shared, const void* src_global, bool in_bounds) {
  emu::issue_cp_async(dst_shared, src_global, in_bounds);
}
inline void cp_async_commit() { emu::commit_cp_async(); }
template <int kPending>
inline void cp_async_wait() {
  emu::wait_cp_async(kPending);
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const auto v = emu::ldmatrix<4>(row, false);
  for (int i = 0; i < 4; ++i) r[i] = v[i];
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  const auto v = emu::ldmatrix<4>(row, true);
  for (int i = 0; i < 4; ++i) r[i] = v[i];
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  const auto v = emu::ldmatrix<2>(row, false);
  for (int i = 0; i < 2; ++i) r[i] = v[i];
}
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  const auto v = emu::ldmatrix<2>(row, true);
  for (int i = 0; i < 2; ++i) r[i] = v[i];
}

template <ElementType kType>
inline void mma_m16n8k16(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::MmaInput input{{a[0], a[1], a[2], a[3]}, {b0, b1}, {acc[0], acc[1], acc[2], acc[3]}};
  const auto d = emu::mma_m16n8k16(input, kType == ElementType::kBFloat16);
  for (int i = 0; i < 4; ++i) acc[i] = d[i];
}

template <ElementType kType>
inline uint32_t pack_pair(float low, float high) {
  const uint16_t lo = ElementTraits<kType>::from_float(low).bits;
  const uint16_t hi = ElementTraits<kType>::from_float(high).bits;
  return static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
}

inline float fast_exp2(float x) { return std::exp2(x); }

inline float quad_max(float x) {
  x = std::fmax(x, __shfl_xor_sync(0xFFFFFFFFu, x, 1));
  return std::fmax(x, __shfl_xor_sync(0xFFFFFFFFu, x, 2));
}

inline float quad_sum(float x) {
  x += __shfl_xor_sync(0xFFFFFFFFu, x, 1);
  return x + __shfl_xor_sync(0xFFFFFFFFu, x, 2);
}

}  // namespace bigkern::cuda_attention
