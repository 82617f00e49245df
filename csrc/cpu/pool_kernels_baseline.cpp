// The CPU pooling kernels for any x86-64 / aarch64 processor (the compiler's default target).
#include "cpu/pool_kernels_includes.h"

namespace bigkern::cpu::baseline {
#define BIGKERN_VECTOR_LANES 4
#include "cpu/pool_kernels.h"
#include "cpu/pool_kernel_entries.h"
#undef BIGKERN_VECTOR_LANES
}  // namespace bigkern::cpu::baseline
