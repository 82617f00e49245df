// Which build of the CPU kernels runs. Every family compiles its kernels for the portable
// baseline and for AVX2+FMA; the convolution also for AVX-512 (its implicit GEMM is the one
// compute-bound kernel whose register tile grows with 32 vector registers). One level is chosen
// at first use by the rule here, and each family takes its widest build at or below it.
#pragma once
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace bigkern::cpu {

enum class IsaLevel { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* isa_name(IsaLevel level) {
  switch (level) {
    case IsaLevel::kAvx512: return "avx512";
    case IsaLevel::kAvx2: return "avx2";
    default: return "baseline";
  }
}

// The widest instruction set this processor runs (AVX-512 = F, BW, DQ and VL; AVX2 with FMA),
// capped by BIGKERN_CPU_ISA=baseline|avx2|avx512 when set: tests cap it to check the narrower
// builds on machines that would pick a wider one. Any other value is an error.
inline IsaLevel cpu_isa_level() {
  static const IsaLevel level = [] {
    IsaLevel best = IsaLevel::kBaseline;
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = IsaLevel::kAvx2;
    if (best == IsaLevel::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      best = IsaLevel::kAvx512;
#endif
    const char* forced = std::getenv("BIGKERN_CPU_ISA");
    if (forced == nullptr || *forced == '\0') return best;
    const std::string cap(forced);
    IsaLevel limit = IsaLevel::kBaseline;
    if (cap == "avx2") limit = IsaLevel::kAvx2;
    else if (cap == "avx512") limit = IsaLevel::kAvx512;
    else
      TORCH_CHECK(cap == "baseline", "BIGKERN_CPU_ISA=", forced, " is not supported; it takes baseline, avx2 or avx512");
    return static_cast<int>(limit) < static_cast<int>(best) ? limit : best;
  }();
  return level;
}

inline bool use_avx2_kernels() { return cpu_isa_level() != IsaLevel::kBaseline; }

// Whether this compiler builds the AMX kernels (the amx-tile/amx-bf16 targets and intrinsics came
// with GCC 11 and Clang 12); older ones build the rest and amx_tiles_ready() is false.
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define BIGKERN_CPU_AMX_BUILD 1
#else
#define BIGKERN_CPU_AMX_BUILD 0
#endif

// Whether the float32 convolution forward may run on the AMX tile unit (conv_amx.h): the processor
// has AMX-TILE and AMX-BF16, the AVX-512 build is selected, Linux granted this process the tile
// data state, and BIGKERN_CPU_AMX is not 0 (tests set it to check the AVX-512 kernels on machines
// that would take the tiles). Decided once, at first use (isa.cpp).
bool amx_tiles_ready();

}  // namespace bigkern::cpu
