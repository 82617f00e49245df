// The CPU pooling kernels compiled for AVX2 + FMA (8 floats per instruction). Library headers
// are included first, for the baseline target; only bigkern's kernels below the pragma use
// AVX2, and pool.cpp calls them only on processors that report AVX2 and FMA.
#include "cpu/pool_kernels_includes.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace bigkern::cpu::avx2 {
#define BIGKERN_VECTOR_LANES 8
#include "cpu/pool_kernels.h"
#include "cpu/pool_kernel_entries.h"
#undef BIGKERN_VECTOR_LANES
}  // namespace bigkern::cpu::avx2
#pragma GCC pop_options
#else
namespace bigkern::cpu::avx2 {
// Not an x86-64 GCC-compatible build: the baseline kernels serve every processor.
const PoolKernelTable& pool_kernels() { return baseline::pool_kernels(); }
}  // namespace bigkern::cpu::avx2
#endif
