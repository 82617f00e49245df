// Host side of the CUDA attention backward (bigkern::attention_backward; the contract is in
// csrc/schema/attention.cpp, the registration in attention.cpp): validation, parameters,
// workspaces, and the launches:
//   1. preprocess: Delta = rowsum(dO * O), and the float32 dQ accumulator zeroed (atomic path);
//   2. main kernel: dK and dV, plus dQ by atomics into the accumulator (atomic path);
//   3. atomic path: grad_q = scale * accumulator;  deterministic path: the dQ kernel, no atomics.
// Everything is enqueued on the current stream; nothing waits for the device (CUDA graphs).
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>

#include "cuda/attention/attention_backward.h"
#include "cuda/attention/attention_host.h"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_config.h"
#include "cuda/attention/backward_launchers.h"
#include "cuda/attention/forward_config.h"

namespace bigkern::cuda_attention {
namespace {

constexpr const char* kOp = "bigkern::attention_backward";
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// out, grad_out and lse: on q's device, of the expected dtype and shape.
void check_tensor(const at::Tensor& t, const char* name, const at::Tensor& q, at::ScalarType dtype,
                  at::IntArrayRef shape) {
  TORCH_CHECK(t.is_cuda() && t.device() == q.device(), kOp, ": `", name, "` must be on q's device ", q.device(),
              ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": `", name, "` must be of dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, kOp, ": `", name, "` must have shape ", shape, ", got ", t.sizes());
}

// The kernels read out and grad_out rows as 16-byte vectors (has_kernel_layout). out comes from
// the forward and qualifies; grad_out is whatever autograd hands over (the op layer only makes its
// last dim contiguous), so a tensor that does not qualify is copied once into a contiguous one.
at::Tensor vector_aligned(const at::Tensor& t) {
  return has_kernel_layout(t) ? t : t.clone(at::MemoryFormat::Contiguous);
}

template <ElementType kType>
cudaError_t launch_main(int bucket, const AttentionParams& p, const BackwardBuffers& b, cudaStream_t stream) {
  switch (bucket) {
    case 32: return launch_attention_backward<kType, 32>(p, b, stream);
    case 64: return launch_attention_backward<kType, 64>(p, b, stream);
    case 96: return launch_attention_backward<kType, 96>(p, b, stream);
    case 128: return launch_attention_backward<kType, 128>(p, b, stream);
    case 160: return launch_attention_backward<kType, 160>(p, b, stream);
    case 192: return launch_attention_backward<kType, 192>(p, b, stream);
    case 224: return launch_attention_backward<kType, 224>(p, b, stream);
    case 256: return launch_attention_backward<kType, 256>(p, b, stream);
  }
  TORCH_INTERNAL_ASSERT(false, kOp, ": no kernel instance for head-dim bucket ", bucket);
}

template <ElementType kType>
cudaError_t launch_dq(int bucket, const AttentionParams& p, const BackwardBuffers& b, cudaStream_t stream) {
  switch (bucket) {
    case 32: return launch_attention_backward_dq<kType, 32>(p, b, stream);
    case 64: return launch_attention_backward_dq<kType, 64>(p, b, stream);
    case 96: return launch_attention_backward_dq<kType, 96>(p, b, stream);
    case 128: return launch_attention_backward_dq<kType, 128>(p, b, stream);
    case 160: return launch_attention_backward_dq<kType, 160>(p, b, stream);
    case 192: return launch_attention_backward_dq<kType, 192>(p, b, stream);
    case 224: return launch_attention_backward_dq<kType, 224>(p, b, stream);
    case 256: return launch_attention_backward_dq<kType, 256>(p, b, stream);
  }
  TORCH_INTERNAL_ASSERT(false, kOp, ": no kernel instance for head-dim bucket ", bucket);
}

template <ElementType kType>
void run_backward(int bucket, bool deterministic, const AttentionParams& p, const BackwardBuffers& b,
                  cudaStream_t stream) {
  C10_CUDA_CHECK(launch_attention_backward_preprocess<kType>(p, b, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  C10_CUDA_CHECK(launch_main<kType>(bucket, p, b, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  C10_CUDA_CHECK(deterministic ? launch_dq<kType>(bucket, p, b, stream)
                               : launch_attention_backward_convert_dq<kType>(p, b, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal, double scale,
    int64_t seed, int64_t offset, bool deterministic) {
  check_attention_inputs(kOp, q, k, v, attn_mask, dropout_p, causal, scale);
  const int64_t batch = q.size(0), heads_q = q.size(1), len_q = q.size(2), head_dim = q.size(3);
  const int64_t heads_kv = k.size(1), len_k = k.size(2);
  check_tensor(out, "out", q, q.scalar_type(), {batch, heads_q, len_q, head_dim});
  check_tensor(grad_out, "grad_out", q, q.scalar_type(), {batch, heads_q, len_q, head_dim});
  check_tensor(lse, "lse", q, at::kFloat, {batch, heads_q, len_q});

  const c10::cuda::CUDAGuard device_guard(q.device());
  // Gradients are contiguous, shaped and typed like q, k, v (the contract).
  at::Tensor grad_q = at::empty(q.sizes(), q.options());
  at::Tensor grad_k = at::empty(k.sizes(), k.options());
  at::Tensor grad_v = at::empty(v.sizes(), v.options());
  // Empty problems launch nothing: a query that sees no key, and a key no query sees, get zeros.
  if (batch == 0 || heads_q == 0 || len_q == 0 || len_k == 0) {
    return {grad_q.zero_(), grad_k.zero_(), grad_v.zero_()};
  }
  check_device_supported(kOp, q);

  const int bucket = head_dim_bucket(head_dim);
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(q.device().index());
  const size_t shared = std::max(backward_shared_bytes(bucket), deterministic ? backward_dq_shared_bytes(bucket) : 0);
  TORCH_CHECK(shared <= prop->sharedMemPerBlockOptin, kOp, ": head dim ", head_dim, " needs ", shared,
              " bytes of shared memory per block, ", prop->name, " offers ", prop->sharedMemPerBlockOptin);
  const BackwardTile tile = backward_tile(bucket);
  const int64_t main_ctas = (len_k + tile.block_n - 1) / tile.block_n * heads_kv * batch;
  const int64_t dq_ctas = (len_q + kBackwardDqBlockM - 1) / kBackwardDqBlockM * heads_q * batch;
  TORCH_CHECK(main_ctas <= kInt32Max && (!deterministic || dq_ctas <= kInt32Max), kOp, ": the problem needs ",
              deterministic ? std::max(main_ctas, dq_ctas) : main_ctas,
              " thread blocks, more than a grid holds (2^31 - 1)");

  const at::Tensor out_rows = vector_aligned(out);
  const at::Tensor grad_out_rows = vector_aligned(grad_out);
  const at::Tensor lse_contiguous = lse.contiguous();
  at::Tensor delta = at::empty({batch, heads_q, len_q}, q.options().dtype(at::kFloat));
  at::Tensor dq_accum;
  if (!deterministic) dq_accum = at::empty({batch, heads_q, len_q, head_dim}, q.options().dtype(at::kFloat));

  const AttentionParams p =
      make_attention_params(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset, out_rows, lse_contiguous);
  BackwardBuffers buffers{};
  buffers.grad_out = grad_out_rows.const_data_ptr();
  buffers.grad_out_strides = {grad_out_rows.stride(0), grad_out_rows.stride(1), grad_out_rows.stride(2)};
  buffers.delta = delta.mutable_data_ptr<float>();
  buffers.dq_accum = deterministic ? nullptr : dq_accum.mutable_data_ptr<float>();
  buffers.grad_q = grad_q.mutable_data_ptr();
  buffers.grad_k = grad_k.mutable_data_ptr();
  buffers.grad_v = grad_v.mutable_data_ptr();

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index());
  if (element_type_of(q) == ElementType::kBFloat16) {
    run_backward<ElementType::kBFloat16>(bucket, deterministic, p, buffers, stream);
  } else {
    run_backward<ElementType::kFloat16>(bucket, deterministic, p, buffers, stream);
  }
  return {grad_q, grad_k, grad_v};
}

}  // namespace bigkern::cuda_attention
