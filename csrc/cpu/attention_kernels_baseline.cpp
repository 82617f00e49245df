// The CPU attention kernels for any x86-64 / aarch64 processor (the compiler's default target:
// 16-byte vectors, no fused multiply-add).
#include "cpu/attention_kernels_includes.h"

namespace bigkern::cpu::baseline {
#define BIGKERN_ATTN_VECTOR_BYTES 16
#define BIGKERN_ATTN_FMA 0
#define BIGKERN_ATTN_AVX2 0
#include "cpu/attention_kernels.h"
#undef BIGKERN_ATTN_VECTOR_BYTES
#undef BIGKERN_ATTN_FMA
#undef BIGKERN_ATTN_AVX2
}  // namespace bigkern::cpu::baseline
