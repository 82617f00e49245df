// Host-side pieces shared by the CUDA attention forward (attention.cpp) and backward
// (attention_backward.cpp): input validation with clear messages, and the kernel parameters of a
// validated problem. Defined in attention.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "cuda/attention/attention_params.h"

namespace bigkern::cuda_attention {

// Every length and head count must leave room for a tile of padding within int32.
constexpr int64_t kMaxLength = (int64_t{1} << 31) - 1024;

// Checks the arguments the forward and backward share (q, k, v, attn_mask, dropout_p, causal,
// scale) against the contract of csrc/schema/attention.cpp and the CUDA kernels' limits: CUDA
// tensors on one device, 4-D, float16/bfloat16, D == Dv, D a multiple of 8 up to 256, Hq a
// multiple of Hkv, the mask (B, Hq, Lq, Lk) of dtype bool or q's, 16-byte-aligned rows.
// `op` names the operator in the messages.
void check_attention_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal,
                            double scale);

// Checks that `t` can be read by cp.async in 16-byte row chunks: last dim contiguous, every other
// stride (of a dim longer than 1) a multiple of 8 elements, data 16-byte aligned.
void check_kernel_layout(const char* op, const char* name, const at::Tensor& t);

// The same test as a predicate, for callers that copy a tensor which does not qualify.
bool has_kernel_layout(const at::Tensor& t);

// Checks that the device of `t` has the tensor cores and copies the kernels use (sm_80+).
void check_device_supported(const char* op, const at::Tensor& t);

ElementType element_type_of(const at::Tensor& t);

// The parameters of a checked problem. out and lse (may be undefined) supply the output
// pointers and out's strides.
AttentionParams make_attention_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal,
                                      double scale, int64_t seed, int64_t offset, const at::Tensor& out,
                                      const at::Tensor& lse);

}  // namespace bigkern::cuda_attention
