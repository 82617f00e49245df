// Which build of the CPU kernels runs: every family compiles its kernels twice (portable, and
// AVX2+FMA) and picks one table at first use by the rule here.
#pragma once
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace bigkern::cpu {

// True when this processor runs AVX2+FMA and BIGKERN_CPU_ISA=baseline does not force the
// portable kernels (tests force them to check that build on machines that would pick AVX2).
inline bool use_avx2_kernels() {
  static const bool avx2 = [] {
    const char* forced = std::getenv("BIGKERN_CPU_ISA");
    if (forced != nullptr && *forced != '\0') {
      TORCH_CHECK(std::string(forced) == "baseline", "BIGKERN_CPU_ISA=", forced,
                  " is not supported; the only value it takes is 'baseline'");
      return false;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
  }();
  return avx2;
}

}  // namespace bigkern::cpu
