// The CPU recurrent kernels compiled for AVX2 + FMA (8 floats per instruction, fused multiply-add
// in the tile products). Library headers are included first, for the baseline target; only the
// kernels below the pragma use AVX2, and rnn.cpp calls them only on processors that report
// AVX2 and FMA.
#include "cpu/rnn_kernels_includes.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace bigkern::cpu::avx2 {
#define BIGKERN_ATTN_VECTOR_BYTES 32
#define BIGKERN_ATTN_FMA 1
#define BIGKERN_ATTN_AVX2 1
#include "cpu/rnn_kernels.h"
#undef BIGKERN_ATTN_VECTOR_BYTES
#undef BIGKERN_ATTN_FMA
#undef BIGKERN_ATTN_AVX2
}  // namespace bigkern::cpu::avx2
#pragma GCC pop_options
#else
namespace bigkern::cpu::avx2 {
// Not an x86-64 GCC-compatible build: the baseline kernels serve every processor.
const RnnKernelTable& rnn_kernels() { return baseline::rnn_kernels(); }
}  // namespace bigkern::cpu::avx2
#endif
