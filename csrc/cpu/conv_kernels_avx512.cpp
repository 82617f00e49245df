// The CPU convolution kernels compiled for AVX-512 (F, BW, DQ, VL: 16 floats per instruction and
// 32 vector registers, so the forward/dgrad register tile doubles; see conv_kernels.h). Library
// headers are included first, for the baseline target; only the kernels below the pragma use
// AVX-512, and conv.cpp calls them only on processors that report it (cpu/isa.h).
#include "cpu/conv_kernels_includes.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#if BIGKERN_CPU_AMX_BUILD
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,amx-tile,amx-bf16")
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif
namespace bigkern::cpu::avx512 {
#define BIGKERN_ATTN_VECTOR_BYTES 64
#define BIGKERN_ATTN_FMA 1
#define BIGKERN_ATTN_AVX2 1
#define BIGKERN_CONV_AMX BIGKERN_CPU_AMX_BUILD
#include "cpu/conv_kernels.h"
#undef BIGKERN_CONV_AMX
#undef BIGKERN_ATTN_VECTOR_BYTES
#undef BIGKERN_ATTN_FMA
#undef BIGKERN_ATTN_AVX2
}  // namespace bigkern::cpu::avx512
#pragma GCC pop_options
#else
namespace bigkern::cpu::avx512 {
// Not an x86-64 GCC-compatible build: the baseline kernels serve every processor.
const ConvKernelTable& conv_kernels() { return baseline::conv_kernels(); }
}  // namespace bigkern::cpu::avx512
#endif
