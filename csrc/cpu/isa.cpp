// The run-time ISA choice (cpu/isa.h) as plain functions, for bigkern._C.cpu_isa() and cpu_amx():
// module.cpp stays free of library headers.
#include "cpu/conv_kernel_table.h"
#include "cpu/isa.h"

#if BIGKERN_CPU_AMX_BUILD
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace bigkern::cpu {

const char* selected_isa_name() { return isa_name(cpu_isa_level()); }

bool amx_tiles_ready() {
  static const bool ready = [] {
    const char* forced = std::getenv("BIGKERN_CPU_AMX");
    const std::string choice = forced == nullptr ? "" : forced;
    TORCH_CHECK(choice.empty() || choice == "0" || choice == "1", "BIGKERN_CPU_AMX=", choice,
                " is not supported; it takes 0 (AVX-512 kernels only) or 1 (the default: AMX where available)");
    if (choice == "0" || cpu_isa_level() != IsaLevel::kAvx512) return false;
#if BIGKERN_CPU_AMX_BUILD
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
    if (!amx_bf16 || !amx_tile) return false;
    // Tile data is a dynamically enabled XSAVE feature: a process must ask for it once
    // (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, Linux 5.16+) before any thread uses the tiles.
    constexpr long kRequestPermission = 0x1023, kTileData = 18;
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
#else
    return false;
#endif
  }();
  return ready;
}

bool amx_conv_runs(const ConvShape& s) {
  return amx_tiles_ready() && !is_depthwise(s) && s.C / s.groups >= 16 && s.K / s.groups >= 16;
}

}  // namespace bigkern::cpu
