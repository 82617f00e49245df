// Inline-PTX building blocks of the attention kernels (sm_80 and newer): asynchronous copies to
// shared memory, ldmatrix, the m16n8k16 tensor-core product, packing and a fast exp2.
//
// The fragment layouts these operate on are in fragment_layout.h (with the PTX tables).
// Nothing here includes ATen: the kernel instances compile against CUDA headers only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/fragment_layout.h"

// Full unrolling keeps fragment arrays in registers (an array indexed by a runtime loop variable
// would live in local memory); only the device pass knows the pragmas.
#if defined(__CUDA_ARCH__)
#define BIGKERN_UNROLL _Pragma("unroll")
#define BIGKERN_NO_UNROLL _Pragma("unroll 1")
#else
#define BIGKERN_UNROLL
#define BIGKERN_NO_UNROLL
#endif

namespace bigkern::cuda_attention {

template <ElementType kType>
struct ElementTraits;

template <>
struct ElementTraits<ElementType::kFloat16> {
  using type = __half;
  __device__ __forceinline__ static float to_float(type x) { return __half2float(x); }
  __device__ __forceinline__ static type from_float(float x) { return __float2half_rn(x); }
};

template <>
struct ElementTraits<ElementType::kBFloat16> {
  using type = __nv_bfloat16;
  __device__ __forceinline__ static float to_float(type x) { return __bfloat162float(x); }
  __device__ __forceinline__ static type from_float(float x) { return __float2bfloat16_rn(x); }
};

template <ElementType kType>
using element_t = typename ElementTraits<kType>::type;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// ---- cp.async ----------------------------------------------------------------------------------

// Copies 16 bytes global -> shared without staging in registers (.cg: bypass L1, the data is
// used once per CTA). When `in_bounds` is false the source size is 0 and the 16 destination bytes
// are zero-filled; `src` must still be a valid address (callers pass the tensor's base).
__device__ __forceinline__ void cp_async_16(void* dst_shared, const void* src_global, bool in_bounds) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst_shared)),
               "l"(src_global), "r"(in_bounds ? 16 : 0));
}

// Closes the group of cp.async issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most kPending of this thread's committed groups are still in flight. Other
// threads' copies are visible only after a following __syncthreads().
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- ldmatrix (see fragment_layout.h for which lane gets which element) -----------------------

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_shared)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_shared)));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row_shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row_shared)));
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row_shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row_shared)));
}

// ---- Tensor-core product -----------------------------------------------------------------------

// acc (16x8, fp32) += A (16x16) * B (16x8), A and B in kType.
template <ElementType kType>
__device__ __forceinline__ void mma_m16n8k16(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (kType == ElementType::kFloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded to kType and packed into one register, `low` in the low 16 bits (the
// lower-indexed element of an mma operand pair).
template <ElementType kType>
__device__ __forceinline__ uint32_t pack_pair(float low, float high) {
  uint32_t packed;
  if constexpr (kType == ElementType::kFloat16) {
    const __half2 pair = __floats2half2_rn(low, high);
    static_assert(sizeof(pair) == sizeof(packed));
    __builtin_memcpy(&packed, &pair, sizeof(packed));
  } else {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
    static_assert(sizeof(pair) == sizeof(packed));
    __builtin_memcpy(&packed, &pair, sizeof(packed));
  }
  return packed;
}

// ---- Math --------------------------------------------------------------------------------------

// 2^x by the special-function unit (ex2.approx.ftz: relative error about 2^-22, far below
// fp16/bf16 resolution). exp2(-inf) = +0, which the masked softmax relies on.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Reductions over the 4 lanes of a quad (the lanes holding one accumulator row).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace bigkern::cuda_attention
