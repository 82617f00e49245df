// Host-side geometry of 2-D pooling shared by the CPU and CUDA kernels: output-size rules
// (identical to ATen's pooling_output_shape), argument checks that mirror torch's errors, and
// the memory layout decision. Kernels receive a filled Pool2dGeometry and never re-derive it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>

namespace bigkern {

struct Pool2dGeometry {
  int64_t N, C, H, W;     // input
  int64_t OH, OW;         // output
  int64_t kh, kw;         // window (for adaptive pools: unused)
  int64_t sh, sw;         // stride
  int64_t ph, pw;         // padding
  int64_t dh, dw;         // dilation
  bool channels_last;     // NHWC storage for input, output and gradients
};

// floor/ceil division for non-negative denominators, valid for negative numerators too.
inline int64_t div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output length of a pooling window along one dimension (ATen's pooling_output_shape).
inline int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
  int64_t out = div_floor(in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
  // With ceil_mode the last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// The layout bigkern computes in: channels_last when torch would suggest it, else NCHW.
inline bool use_channels_last(const at::Tensor& x) {
  return x.suggest_memory_format() == c10::MemoryFormat::ChannelsLast;
}

inline c10::MemoryFormat memory_format(const Pool2dGeometry& g) {
  return g.channels_last ? c10::MemoryFormat::ChannelsLast : c10::MemoryFormat::Contiguous;
}

inline void check_pool_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": expected a 4-D (N, C, H, W) input, got ", x.dim(), "-D of shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": expected a floating-point input, got ", x.scalar_type());
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op,
              ": expected non-empty channel and spatial dims, got input of shape ", x.sizes());
}

inline void check_pair(c10::IntArrayRef v, const char* op, const char* name) {
  TORCH_CHECK(v.size() == 2, op, ": ", name, " must have 2 values, got ", v.size());
}

// Windowed pools (max/avg; avg passes dilation 1).
inline Pool2dGeometry window_geometry(const at::Tensor& x, c10::IntArrayRef kernel, c10::IntArrayRef stride,
                                      c10::IntArrayRef padding, c10::IntArrayRef dilation, bool ceil_mode,
                                      const char* op) {
  check_pool_input(x, op);
  check_pair(kernel, op, "kernel_size");
  check_pair(stride, op, "stride");
  check_pair(padding, op, "padding");
  check_pair(dilation, op, "dilation");
  Pool2dGeometry g{};
  g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3);
  g.kh = kernel[0]; g.kw = kernel[1];
  g.sh = stride[0]; g.sw = stride[1];
  g.ph = padding[0]; g.pw = padding[1];
  g.dh = dilation[0]; g.dw = dilation[1];
  TORCH_CHECK(g.kh > 0 && g.kw > 0, op, ": kernel_size must be positive, got ", kernel);
  TORCH_CHECK(g.sh > 0 && g.sw > 0, op, ": stride must be positive, got ", stride);
  TORCH_CHECK(g.dh > 0 && g.dw > 0, op, ": dilation must be positive, got ", dilation);
  TORCH_CHECK(g.ph >= 0 && g.pw >= 0, op, ": padding must be non-negative, got ", padding);
  // torch's rule: padding at most half the (undilated) kernel.
  TORCH_CHECK(g.ph <= g.kh / 2 && g.pw <= g.kw / 2, op, ": padding ", padding,
              " must be at most half of kernel_size ", kernel);
  g.OH = pooled_size(g.H, g.kh, g.ph, g.sh, g.dh, ceil_mode);
  g.OW = pooled_size(g.W, g.kw, g.pw, g.sw, g.dw, ceil_mode);
  TORCH_CHECK(g.OH >= 1 && g.OW >= 1, op, ": input of spatial size (", g.H, ", ", g.W,
              ") is too small for kernel_size ", kernel, " with padding ", padding, " and dilation ", dilation,
              ": output size would be (", g.OH, ", ", g.OW, ")");
  g.channels_last = use_channels_last(x);
  return g;
}

// Adaptive pools: window o covers [floor(o*in/out), ceil((o+1)*in/out)).
inline Pool2dGeometry adaptive_geometry(const at::Tensor& x, c10::IntArrayRef output_size, const char* op) {
  check_pool_input(x, op);
  check_pair(output_size, op, "output_size");
  TORCH_CHECK(output_size[0] > 0 && output_size[1] > 0, op, ": output_size must be positive, got ", output_size);
  Pool2dGeometry g{};
  g.N = x.size(0); g.C = x.size(1); g.H = x.size(2); g.W = x.size(3);
  g.OH = output_size[0]; g.OW = output_size[1];
  g.kh = g.kw = g.sh = g.sw = g.dh = g.dw = 1;
  g.ph = g.pw = 0;
  g.channels_last = use_channels_last(x);
  return g;
}

inline void check_grad_output(const at::Tensor& grad_output, const Pool2dGeometry& g, const at::Tensor& x,
                              const char* op) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.N && grad_output.size(1) == g.C &&
                  grad_output.size(2) == g.OH && grad_output.size(3) == g.OW,
              op, ": grad_output of shape ", grad_output.sizes(), " does not match the output shape [", g.N, ", ",
              g.C, ", ", g.OH, ", ", g.OW, "]");
  TORCH_CHECK(grad_output.scalar_type() == x.scalar_type(), op, ": grad_output dtype ", grad_output.scalar_type(),
              " differs from input dtype ", x.scalar_type());
  TORCH_CHECK(grad_output.device() == x.device(), op, ": grad_output is on ", grad_output.device(),
              " but the input is on ", x.device());
}

inline void check_indices(const at::Tensor& indices, const Pool2dGeometry& g, const at::Tensor& x, const char* op) {
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(indices.dim() == 4 && indices.size(0) == g.N && indices.size(1) == g.C && indices.size(2) == g.OH &&
                  indices.size(3) == g.OW,
              op, ": indices of shape ", indices.sizes(), " do not match the output shape (compute them in the "
              "forward with compute_indices=True)");
  TORCH_CHECK(indices.device() == x.device(), op, ": indices are on ", indices.device(), " but the input is on ",
              x.device());
}

inline void check_divisor(c10::optional<int64_t> divisor_override, const char* op) {
  TORCH_CHECK(!divisor_override.has_value() || *divisor_override != 0, op, ": divisor_override must be non-zero");
}

}  // namespace bigkern
