// The CPU convolution kernels compiled for AVX-512 with a 32-channel register tile (12 pixels x
// 2 vectors), for layers whose channel counts fit 32-wide blocks but not 64-wide ones (see
// conv.cpp: kernels). Otherwise the same as conv_kernels_avx512.cpp (including the AMX paths,
// so these layers' backward takes the tiles too).
#include "cpu/conv_kernels_includes.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#if BIGKERN_CPU_AMX_BUILD
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,amx-tile,amx-bf16")
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif
namespace bigkern::cpu::avx512_narrow {
#define BIGKERN_ATTN_VECTOR_BYTES 64
#define BIGKERN_ATTN_FMA 1
#define BIGKERN_ATTN_AVX2 1
#define BIGKERN_CONV_NARROW_TILE 1
#define BIGKERN_CONV_AMX BIGKERN_CPU_AMX_BUILD
#include "cpu/conv_kernels.h"
#undef BIGKERN_CONV_AMX
#undef BIGKERN_CONV_NARROW_TILE
#undef BIGKERN_ATTN_VECTOR_BYTES
#undef BIGKERN_ATTN_FMA
#undef BIGKERN_ATTN_AVX2
}  // namespace bigkern::cpu::avx512_narrow
#pragma GCC pop_options
#else
namespace bigkern::cpu::avx512_narrow {
// Not an x86-64 GCC-compatible build: the baseline kernels serve every processor.
const ConvKernelTable& conv_kernels() { return baseline::conv_kernels(); }
}  // namespace bigkern::cpu::avx512_narrow
#endif
