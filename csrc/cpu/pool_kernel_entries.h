// Dtype dispatch from tensors to the kernel templates, and the table of this instruction set.
// Included by each pool_kernels_<isa>.cpp inside its own namespace, after pool_kernels.h.

#define BIGKERN_POOL_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

inline void max_pool2d_entry(const at::Tensor& x, at::Tensor& out, at::Tensor* indices, const Pool2dGeometry& g) {
  BIGKERN_POOL_DISPATCH(x.scalar_type(), "bigkern::max_pool2d", [&] {
    const auto* in = x.const_data_ptr<scalar_t>();
    auto* o = out.mutable_data_ptr<scalar_t>();
    if (indices != nullptr) {
      auto* idx = indices->mutable_data_ptr<int64_t>();
      g.channels_last ? max_pool2d_nhwc<scalar_t, true>(in, o, idx, g) : max_pool2d_nchw<scalar_t, true>(in, o, idx, g);
    } else {
      g.channels_last ? max_pool2d_nhwc<scalar_t, false>(in, o, nullptr, g)
                      : max_pool2d_nchw<scalar_t, false>(in, o, nullptr, g);
    }
  });
}

inline void avg_pool2d_entry(const at::Tensor& x, at::Tensor& out, const Pool2dGeometry& g, bool count_include_pad,
                             std::optional<int64_t> divisor_override) {
  BIGKERN_POOL_DISPATCH(x.scalar_type(), "bigkern::avg_pool2d", [&] {
    const auto* in = x.const_data_ptr<scalar_t>();
    auto* o = out.mutable_data_ptr<scalar_t>();
    g.channels_last ? avg_pool2d_nhwc<scalar_t>(in, o, g, count_include_pad, divisor_override)
                    : avg_pool2d_nchw<scalar_t>(in, o, g, count_include_pad, divisor_override);
  });
}

inline void adaptive_avg_pool2d_entry(const at::Tensor& x, at::Tensor& out, const Pool2dGeometry& g) {
  BIGKERN_POOL_DISPATCH(x.scalar_type(), "bigkern::adaptive_avg_pool2d", [&] {
    const auto* in = x.const_data_ptr<scalar_t>();
    auto* o = out.mutable_data_ptr<scalar_t>();
    g.channels_last ? adaptive_pool2d_nhwc<scalar_t, false, false>(in, o, nullptr, g)
                    : adaptive_avg_pool2d_nchw<scalar_t>(in, o, g);
  });
}

// Adaptive windows are equal, disjoint and unpadded when the output size divides the input
// size: that is a window max pool with kernel = stride = input / output, whose kernels are faster.
inline bool adaptive_is_window_pool(const Pool2dGeometry& g) { return g.H % g.OH == 0 && g.W % g.OW == 0; }

inline Pool2dGeometry as_window_pool(Pool2dGeometry g) {
  g.kh = g.sh = g.H / g.OH;
  g.kw = g.sw = g.W / g.OW;
  return g;
}

inline void adaptive_max_pool2d_entry(const at::Tensor& x, at::Tensor& out, at::Tensor* indices,
                                      const Pool2dGeometry& g) {
  if (adaptive_is_window_pool(g)) {
    max_pool2d_entry(x, out, indices, as_window_pool(g));
    return;
  }
  BIGKERN_POOL_DISPATCH(x.scalar_type(), "bigkern::adaptive_max_pool2d", [&] {
    const auto* in = x.const_data_ptr<scalar_t>();
    auto* o = out.mutable_data_ptr<scalar_t>();
    if (indices != nullptr) {
      auto* idx = indices->mutable_data_ptr<int64_t>();
      g.channels_last ? adaptive_pool2d_nhwc<scalar_t, true, true>(in, o, idx, g)
                      : adaptive_max_pool2d_nchw<scalar_t, true>(in, o, idx, g);
    } else {
      g.channels_last ? adaptive_pool2d_nhwc<scalar_t, true, false>(in, o, nullptr, g)
                      : adaptive_max_pool2d_nchw<scalar_t, false>(in, o, nullptr, g);
    }
  });
}

inline void max_backward_entry(const at::Tensor& grad_out, const at::Tensor& indices, at::Tensor& grad_in,
                               const Pool2dGeometry& g) {
  BIGKERN_POOL_DISPATCH(grad_out.scalar_type(), "bigkern::max_pool2d_backward", [&] {
    max_pool2d_backward_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(), indices.const_data_ptr<int64_t>(),
                                         grad_in.mutable_data_ptr<scalar_t>(), g);
  });
}

inline void avg_pool2d_backward_entry(const at::Tensor& grad_out, at::Tensor& grad_in, const Pool2dGeometry& g,
                                      bool count_include_pad, std::optional<int64_t> divisor_override) {
  BIGKERN_POOL_DISPATCH(grad_out.scalar_type(), "bigkern::avg_pool2d_backward", [&] {
    avg_pool2d_backward_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(), grad_in.mutable_data_ptr<scalar_t>(),
                                         g, count_include_pad, divisor_override);
  });
}

inline void adaptive_avg_pool2d_backward_entry(const at::Tensor& grad_out, at::Tensor& grad_in,
                                               const Pool2dGeometry& g) {
  BIGKERN_POOL_DISPATCH(grad_out.scalar_type(), "bigkern::adaptive_avg_pool2d_backward", [&] {
    adaptive_avg_pool2d_backward_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(),
                                                  grad_in.mutable_data_ptr<scalar_t>(), g);
  });
}

#undef BIGKERN_POOL_DISPATCH

const PoolKernelTable& pool_kernels() {
  static const PoolKernelTable table{
      max_pool2d_entry,          avg_pool2d_entry,
      adaptive_avg_pool2d_entry, adaptive_max_pool2d_entry, max_backward_entry,
      avg_pool2d_backward_entry, adaptive_avg_pool2d_backward_entry,
  };
  return table;
}
