// The CUDA backward of bigkern::attention_backward (defined in attention_backward.cpp); the single
// TORCH_LIBRARY_IMPL(bigkern, CUDA, m) in attention.cpp registers it. Arguments and results are
// exactly the schema's (csrc/schema/attention.cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace bigkern::cuda_attention {

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal, double scale,
    int64_t seed, int64_t offset, bool deterministic);

}  // namespace bigkern::cuda_attention
