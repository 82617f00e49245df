// The launchers of the attention backward kernels. Each is a template defined in a kernel header
// (backward_preprocess.cuh, backward_kernel.cuh, backward_dq_kernel.cuh) and explicitly
// instantiated per dtype, or per (dtype, head-dim bucket), by a generated file in instances/
// (generate_instances.py); attention_backward.cpp includes only this header.
//
// A launcher enqueues its kernel on `stream` and returns the error of raising the kernel's
// shared-memory limit (cudaSuccess otherwise); the caller checks it, and then the launch itself
// with C10_CUDA_KERNEL_LAUNCH_CHECK(). Callers launch only for non-empty problems
// (B, Hq, Lq, Lk >= 1).
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/backward_params.h"

namespace bigkern::cuda_attention {

// Delta for every query row, and dq_accum zeroed (when present).
template <ElementType kType>
cudaError_t launch_attention_backward_preprocess(const AttentionParams& p, const BackwardBuffers& b,
                                                 cudaStream_t stream);

// grad_q = scale * dq_accum, rounded to kType.
template <ElementType kType>
cudaError_t launch_attention_backward_convert_dq(const AttentionParams& p, const BackwardBuffers& b,
                                                 cudaStream_t stream);

// grad_k and grad_v; also adds dQ / scale into dq_accum when it is present.
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_backward(const AttentionParams& p, const BackwardBuffers& b, cudaStream_t stream);

// grad_q without atomics (the deterministic path).
template <ElementType kType, int kHeadDim>
cudaError_t launch_attention_backward_dq(const AttentionParams& p, const BackwardBuffers& b, cudaStream_t stream);

}  // namespace bigkern::cuda_attention
