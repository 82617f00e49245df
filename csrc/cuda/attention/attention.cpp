// Host side of the CUDA attention ops: validation, kernel parameters, the choice between the
// plain and the split-KV forward, dispatch to the generated kernel instances by (dtype, head-dim
// bucket), and the registration of bigkern::attention_forward and bigkern::attention_backward
// for the CUDA dispatch key.
//
// No host synchronisation (CUDA graphs): outputs and scratch come from at::empty on the current
// stream, the device properties from ATen's cache, and nothing is read back from the device.
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>

#include "common/philox.h"
#include "cuda/attention/attention_backward.h"
#include "cuda/attention/attention_host.h"
#include "cuda/attention/attention_launchers.h"
#include "cuda/attention/forward_config.h"
#include "cuda/attention/splitkv_plan.h"

namespace bigkern::cuda_attention {

// ---------------------------------------------------------------------------------------------
// Validation

void check_kernel_layout(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.stride(-1) == 1 || t.size(-1) <= 1, op, ": `", name,
              "` must have a contiguous last dim (stride 1), got strides ", t.strides());
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    TORCH_CHECK(t.size(d) <= 1 || t.stride(d) % 8 == 0, op, ": every stride of `", name,
                "` but the last must be a multiple of 8 elements (rows are copied in 16-byte chunks), got strides ",
                t.strides(), "; pass ", name, ".contiguous()");
  }
  TORCH_CHECK(t.numel() == 0 || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, op, ": `", name,
              "` must start at a 16-byte aligned address (rows are copied in 16-byte chunks); pass ", name,
              ".contiguous()");
}

bool has_kernel_layout(const at::Tensor& t) {
  if (t.numel() > 0 && reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 != 0) return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const bool last = d + 1 == t.dim();
    if (t.size(d) > 1 && (last ? t.stride(d) != 1 : t.stride(d) % 8 != 0)) return false;
  }
  return true;
}

void check_device_supported(const char* op, const at::Tensor& t) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(t.device().index());
  TORCH_CHECK(prop->major >= 8, op, ": the CUDA attention kernels need compute capability 8.0 or newer (",
              "float16/bfloat16 mma.sync and cp.async); ", prop->name, " is ", prop->major, ".", prop->minor,
              " (use bigkern.use_backend(\"triton\") or \"torch\")");
}

void check_attention_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal,
                            double scale) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"q", q}, {"k", k}, {"v", v}}) {
    TORCH_CHECK(t.is_cuda(), op, ": expected `", name, "` to be a CUDA tensor, got a tensor on ", t.device());
    TORCH_CHECK(t.device() == q.device(), op, ": q, k and v must be on one device, got `", name, "` on ",
                t.device(), " and q on ", q.device());
    TORCH_CHECK(t.dim() == 4, op, ": `", name, "` must be 4-D (B, H, L, D), got shape ", t.sizes());
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": q, k and v must share a dtype, got `", name, "` of ",
                t.scalar_type(), " and q of ", q.scalar_type());
  }
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16, op,
              ": the CUDA attention kernels take float16 or bfloat16, got ", q.scalar_type(),
              " (float32 runs on the triton backend)");
  const int64_t batch = q.size(0), heads_q = q.size(1), len_q = q.size(2), head_dim = q.size(3);
  const int64_t heads_kv = k.size(1), len_k = k.size(2);
  TORCH_CHECK(k.size(0) == batch && v.size(0) == batch, op, ": q, k and v must share the batch size, got ", batch,
              ", ", k.size(0), ", ", v.size(0));
  TORCH_CHECK(v.size(1) == heads_kv && v.size(2) == len_k, op, ": k ", k.sizes(), " and v ", v.sizes(),
              " must agree in heads and length");
  TORCH_CHECK(heads_kv > 0 ? heads_q % heads_kv == 0 : heads_q == 0, op, ": q's heads (", heads_q,
              ") must be a multiple of k/v's heads (", heads_kv, ")");
  TORCH_CHECK(k.size(3) == head_dim, op, ": q and k head dims differ: ", head_dim, " vs ", k.size(3));
  TORCH_CHECK(v.size(3) == head_dim, op, ": the CUDA attention kernels need v's head dim equal to q's, got ",
              v.size(3), " and ", head_dim);
  TORCH_CHECK(head_dim % 8 == 0 && head_dim >= 8 && head_dim <= kMaxHeadDim, op,
              ": the CUDA attention kernels take head dims that are multiples of 8 from 8 to ", kMaxHeadDim, ", got ",
              head_dim);
  TORCH_CHECK(len_q <= kMaxLength && len_k <= kMaxLength, op, ": sequence lengths must be at most ", kMaxLength,
              ", got Lq = ", len_q, ", Lk = ", len_k);
  TORCH_CHECK(batch * heads_q <= std::numeric_limits<int32_t>::max(), op, ": B * Hq must fit int32, got ",
              batch * heads_q);
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, op, ": dropout_p must be in [0, 1), got ", dropout_p);
  TORCH_CHECK(causal >= kCausalNone && causal <= kCausalBottomRight, op,
              ": causal must be 0 (none), 1 (top-left) or 2 (bottom-right), got ", causal);
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  check_kernel_layout(op, "q", q);
  check_kernel_layout(op, "k", k);
  check_kernel_layout(op, "v", v);
  if (attn_mask.has_value()) {
    const at::Tensor& mask = *attn_mask;
    TORCH_CHECK(mask.device() == q.device(), op, ": attn_mask is on ", mask.device(), " but q is on ", q.device());
    TORCH_CHECK(mask.scalar_type() == at::kBool || mask.scalar_type() == q.scalar_type(), op,
                ": attn_mask must be bool or q's dtype (", q.scalar_type(), "), got ", mask.scalar_type());
    TORCH_CHECK(mask.dim() == 4 && mask.size(0) == batch && mask.size(1) == heads_q && mask.size(2) == len_q &&
                    mask.size(3) == len_k,
                op, ": attn_mask must be a (B, Hq, Lq, Lk) = (", batch, ", ", heads_q, ", ", len_q, ", ", len_k,
                ") view (stride 0 where it broadcasts), got shape ", mask.sizes());
  }
}

ElementType element_type_of(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? ElementType::kBFloat16 : ElementType::kFloat16;
}

static TensorStrides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

AttentionParams make_attention_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& attn_mask, double dropout_p, int64_t causal,
                                      double scale, int64_t seed, int64_t offset, const at::Tensor& out,
                                      const at::Tensor& lse) {
  AttentionParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_strides = strides_of(q);
  p.k_strides = strides_of(k);
  p.v_strides = strides_of(v);
  p.out = out.defined() ? out.data_ptr() : nullptr;
  p.out_strides = out.defined() ? strides_of(out) : TensorStrides{};
  p.lse = lse.defined() ? lse.data_ptr<float>() : nullptr;

  p.batch = static_cast<int32_t>(q.size(0));
  p.heads_q = static_cast<int32_t>(q.size(1));
  p.heads_kv = static_cast<int32_t>(k.size(1));
  p.kv_group = p.heads_kv > 0 ? p.heads_q / p.heads_kv : 1;
  p.len_q = static_cast<int32_t>(q.size(2));
  p.len_k = static_cast<int32_t>(k.size(2));
  p.head_dim = static_cast<int32_t>(q.size(3));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);

  p.causal = static_cast<int32_t>(causal);
  p.causal_shift = causal == kCausalBottomRight ? p.len_k - p.len_q : 0;

  p.mask_kind = MaskKind::kNone;
  if (attn_mask.has_value()) {
    const at::Tensor& mask = *attn_mask;
    p.mask_kind = mask.scalar_type() == at::kBool ? MaskKind::kBool : MaskKind::kAdditive;
    p.mask = mask.data_ptr();
    p.mask_stride_batch = mask.stride(0);
    p.mask_stride_head = mask.stride(1);
    p.mask_stride_row = mask.stride(2);
    p.mask_stride_col = mask.stride(3);
  }

  p.has_dropout = dropout_p > 0.0;
  p.dropout_threshold = bigkern::dropout_threshold(dropout_p);
  p.dropout_rescale = static_cast<float>(1.0 / (1.0 - dropout_p));
  const auto seed_bits = static_cast<uint64_t>(seed);  // the generator's key is the seed's 64 bits
  p.seed_lo = static_cast<uint32_t>(seed_bits);
  p.seed_hi = static_cast<uint32_t>(seed_bits >> 32);
  p.philox_offset = static_cast<uint32_t>(static_cast<uint64_t>(offset));
  return p;
}

// ---------------------------------------------------------------------------------------------
// Dispatch to the instances (instances/*.cu, written by generate_instances.py)

// Must list forward_config.h's kHeadDimBuckets: each value names an instantiated launcher.
using HeadDimBuckets = std::integer_sequence<int, 32, 64, 96, 128, 160, 192, 224, 256>;

template <ElementType kType, int... kBuckets>
cudaError_t launch_forward_instance(std::integer_sequence<int, kBuckets...>, int bucket, const AttentionParams& p,
                                    const SplitKvWorkspace* split, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  const bool found =
      ((bucket == kBuckets &&
        (error = split != nullptr ? launch_attention_forward_splitkv<kType, kBuckets>(p, *split, stream)
                                  : launch_attention_forward<kType, kBuckets>(p, stream),
         true)) ||
       ...);
  TORCH_INTERNAL_ASSERT(found, "bigkern::attention_forward: no kernel instance for head-dim bucket ", bucket);
  return error;
}

static void launch_forward(ElementType type, int bucket, const AttentionParams& p, const SplitKvWorkspace* split,
                           cudaStream_t stream) {
  C10_CUDA_CHECK(type == ElementType::kBFloat16
                     ? launch_forward_instance<ElementType::kBFloat16>(HeadDimBuckets{}, bucket, p, split, stream)
                     : launch_forward_instance<ElementType::kFloat16>(HeadDimBuckets{}, bucket, p, split, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

static void launch_combine(ElementType type, const AttentionParams& p, const SplitKvWorkspace& split,
                           cudaStream_t stream) {
  C10_CUDA_CHECK(type == ElementType::kBFloat16
                     ? launch_attention_splitkv_combine<ElementType::kBFloat16>(p, split, stream)
                     : launch_attention_splitkv_combine<ElementType::kFloat16>(p, split, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------
// The forward op

std::tuple<at::Tensor, at::Tensor> attention_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v,
                                                          const std::optional<at::Tensor>& attn_mask,
                                                          double dropout_p, int64_t causal, double scale,
                                                          int64_t seed, int64_t offset) {
  constexpr const char* kOp = "bigkern::attention_forward";
  check_attention_inputs(kOp, q, k, v, attn_mask, dropout_p, causal, scale);
  const c10::cuda::CUDAGuard device_guard(q.device());
  const int64_t batch = q.size(0), heads_q = q.size(1), len_q = q.size(2), head_dim = q.size(3);
  const int64_t len_k = k.size(2);
  at::Tensor out = at::empty({batch, heads_q, len_q, head_dim}, q.options());
  at::Tensor lse = at::empty({batch, heads_q, len_q}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};
  if (len_k == 0) {  // no key at all: every row is empty
    out.zero_();
    lse.fill_(std::numeric_limits<float>::infinity());
    return {out, lse};
  }
  check_device_supported(kOp, q);

  const AttentionParams p = make_attention_params(q, k, v, attn_mask, dropout_p, causal, scale, seed, offset, out, lse);
  const int bucket = head_dim_bucket(head_dim);
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  TORCH_CHECK(forward_shared_bytes(bucket) <= prop->sharedMemPerBlockOptin, kOp, ": head dim ", head_dim,
              " needs ", forward_shared_bytes(bucket), " bytes of shared memory per block, ", prop->name,
              " offers ", prop->sharedMemPerBlockOptin);

  const int64_t block_m = forward_block_m(bucket);
  const int64_t ctas = (len_q + block_m - 1) / block_m * heads_q * batch;
  // Keys visible to some row: causal masking can leave most of a long KV cache out of reach of a
  // short query block (top-left alignment), and chunks beyond it would only idle.
  const int64_t visible_keys =
      causal == kCausalNone ? len_k : std::clamp<int64_t>(int64_t{p.len_q} + p.causal_shift, 0, len_k);
  const SplitPlan plan = plan_splits(ctas, visible_keys, forward_tile(bucket).block_n, prop->multiProcessorCount);
  TORCH_CHECK(ctas * plan.num_splits <= std::numeric_limits<int32_t>::max(), kOp, ": the problem needs ",
              ctas * plan.num_splits, " thread blocks, more than a grid holds (2^31 - 1)");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const ElementType type = element_type_of(q);
  if (plan.num_splits == 1) {
    launch_forward(type, bucket, p, nullptr, stream);
    return {out, lse};
  }
  // One float32 scratch: partial outputs (splits, B, Hq, Lq, D), then partial lse (splits, B, Hq, Lq).
  const int64_t rows = batch * heads_q * len_q;
  at::Tensor scratch = at::empty({plan.num_splits * rows * (head_dim + 1)}, q.options().dtype(at::kFloat));
  float* const partial_out = scratch.data_ptr<float>();
  const SplitKvWorkspace split{partial_out, partial_out + plan.num_splits * rows * head_dim, plan.num_splits,
                               plan.keys_per_split};
  launch_forward(type, bucket, p, &split, stream);
  launch_combine(type, p, split, stream);
  return {out, lse};
}

}  // namespace bigkern::cuda_attention

TORCH_LIBRARY_IMPL(bigkern, CUDA, m) {
  m.impl("attention_forward", &bigkern::cuda_attention::attention_forward_cuda);
  m.impl("attention_backward", &bigkern::cuda_attention::attention_backward_cuda);
}
