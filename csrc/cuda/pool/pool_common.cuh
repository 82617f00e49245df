// Building blocks shared by the CUDA pooling kernels.
//
// Every kernel is a grid-stride loop over "work items" (one output element in the forwards, one
// input element in the gather backwards; in NHWC one group of kLanes channels of it). The per-item
// work lives in a functor whose call operator is host-callable too, so the index arithmetic can be
// exercised on the CPU; the kernel itself only walks linear indices. Each op's functors (in its .cu)
// only locate their item and its window; the loops over taps or covering outputs that several ops
// share, and the host code that picks an instantiation and launches it (launch_items), are here.
//
// Index type: every kernel is instantiated for int32_t and int64_t offsets. int32 is chosen when
// fits_int32() proves that all offsets and window coordinates stay below 2^31, because 64-bit
// division (used to split linear indices into coordinates) costs several times more than 32-bit.
// The grid-stride counter itself is always int64 so that stepping past the end cannot overflow.
#pragma once

#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "common/pool_geometry.h"

// Full unrolling keeps the per-lane arrays in registers. Only the device pass knows the pragma;
// the host compiler would warn about it under -Wall.
#if defined(__CUDA_ARCH__)
#define BIGKERN_UNROLL _Pragma("unroll")
#else
#define BIGKERN_UNROLL
#endif

namespace bigkern::cuda_pool {

// Half and bfloat16 accumulate in float, float in float, double in double.
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

// ---------------------------------------------------------------------------------------------
// Launching

// Pooling moves many bytes per flop, so what matters is enough resident warps to hide memory
// latency. At 256 threads per block the int32-offset variants (20-64 registers) keep 4-8 blocks,
// 1024-2048 threads, resident per SM on sm_80/sm_90; the int64 ones (only where fits_int32
// fails) need up to ~90 registers and keep 2-3.
constexpr int kThreadsPerBlock = 256;
// gridDim.x may not exceed 2^31 - 1. 2^16 blocks of 256 threads is still ~60 full waves on a
// 132-SM H100, so the cap only makes threads loop on tensors with more than 16M work items.
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

template <typename WorkItem>
__global__ void __launch_bounds__(kThreadsPerBlock) for_each_work_item(const WorkItem item, int64_t work_items) {
  using index_t = typename WorkItem::index_type;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t linear = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; linear < work_items;
       linear += step) {
    item(static_cast<index_t>(linear));
  }
}

// Callers return early on empty tensors, so work_items >= 1.
template <typename WorkItem>
void launch_work_items(const WorkItem& item, int64_t work_items) {
  const int64_t blocks = std::min((work_items + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for_each_work_item<WorkItem><<<static_cast<unsigned int>(blocks), kThreadsPerBlock, 0, stream>>>(item, work_items);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------
// Host side

inline void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), op, ": expected `", arg, "` to be a CUDA tensor, got a tensor on ", t.device());
}

// True when int32 offsets are exact: every tensor the kernel indexes has fewer than 2^31 elements,
// and every coordinate the kernels form stays below 2^31. Per spatial dim those are window starts
// o*s - p, taps up to o*s - p + (k-1)*d, padded ends I + p, gather bounds (i + p - (k-1)*d - 1)/s,
// adaptive bounds o*I and (o+1)*I + O - 1 (and the same with I and O swapped); all are below
// (O+1)*(I+s) + k*d + 2p. Avg pool sizes are at most kh*kw. The products are formed in double so
// absurd arguments cannot overflow the check itself (doubles are exact up to 2^53, far above 2^31).
inline bool fits_int32(const Pool2dGeometry& g, std::initializer_list<int64_t> numels) {
  constexpr double kLimit = std::numeric_limits<int32_t>::max();
  for (const int64_t numel : numels) {
    if (static_cast<double>(numel) > kLimit) return false;
  }
  const auto dim_fits = [kLimit](int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
    const double bound = (static_cast<double>(out) + 1) * (static_cast<double>(in) + static_cast<double>(s)) +
                         static_cast<double>(k) * static_cast<double>(d) + 2 * static_cast<double>(p);
    return bound <= kLimit;
  };
  return dim_fits(g.H, g.OH, g.kh, g.sh, g.ph, g.dh) && dim_fits(g.W, g.OW, g.kw, g.sw, g.pw, g.dw) &&
         static_cast<double>(g.kh) * static_cast<double>(g.kw) <= kLimit;
}

// ---------------------------------------------------------------------------------------------
// NHWC channel vectors

constexpr int kVectorBytes = 16;

template <typename T>
struct alignas(kVectorBytes) VectorChunk {
  T lane[kVectorBytes / sizeof(T)];
};

// Channels per thread in the vectorized NHWC kernels: one 16-byte load of scalar_t.
template <typename scalar_t>
constexpr int kVectorLanes = kVectorBytes / static_cast<int>(sizeof(scalar_t));

// A vector of kLanes channels starting at channel c of pixel q sits at element q*C + c. With C and
// c multiples of kLanes that is a multiple of 16 bytes into a scalar_t tensor, and a multiple of
// 8*kLanes >= 16 bytes into an int64 index tensor of the same shape, so 16-byte aligned base
// pointers suffice. A null pointer (an index tensor that is never touched) passes.
template <typename scalar_t>
bool nhwc_vectorizable(const Pool2dGeometry& g, std::initializer_list<const void*> pointers) {
  if (!g.channels_last || g.C % kVectorLanes<scalar_t> != 0) return false;
  for (const void* pointer : pointers) {
    if (reinterpret_cast<std::uintptr_t>(pointer) % kVectorBytes != 0) return false;
  }
  return true;
}

// kCount consecutive values: 16-byte accesses when they fill whole chunks (the vectorized NHWC
// kernels; the pointer is then 16-byte aligned, see nhwc_vectorizable), else one plain access.
template <typename T, int kCount>
C10_HOST_DEVICE inline void load_lanes(const T* src, T (&dst)[kCount]) {
  static_assert(kCount == 1 || (kCount * sizeof(T)) % kVectorBytes == 0, "lanes must fill whole 16-byte chunks");
  if constexpr (kCount == 1) {
    dst[0] = *src;
  } else {
    constexpr int kPerChunk = kVectorBytes / sizeof(T);
    BIGKERN_UNROLL
    for (int chunk = 0; chunk < kCount / kPerChunk; ++chunk) {
      const VectorChunk<T> v = reinterpret_cast<const VectorChunk<T>*>(src)[chunk];
      BIGKERN_UNROLL
      for (int i = 0; i < kPerChunk; ++i) dst[chunk * kPerChunk + i] = v.lane[i];
    }
  }
}

template <typename T, int kCount>
C10_HOST_DEVICE inline void store_lanes(T* dst, const T (&src)[kCount]) {
  static_assert(kCount == 1 || (kCount * sizeof(T)) % kVectorBytes == 0, "lanes must fill whole 16-byte chunks");
  if constexpr (kCount == 1) {
    *dst = src[0];
  } else {
    constexpr int kPerChunk = kVectorBytes / sizeof(T);
    BIGKERN_UNROLL
    for (int chunk = 0; chunk < kCount / kPerChunk; ++chunk) {
      VectorChunk<T> v;
      BIGKERN_UNROLL
      for (int i = 0; i < kPerChunk; ++i) v.lane[i] = src[chunk * kPerChunk + i];
      reinterpret_cast<VectorChunk<T>*>(dst)[chunk] = v;
    }
  }
}

// Rounds accumulators to scalar_t and stores them.
template <typename scalar_t, int kCount>
C10_HOST_DEVICE inline void store_rounded(scalar_t* dst, const acc_t<scalar_t> (&values)[kCount]) {
  scalar_t rounded[kCount];
  BIGKERN_UNROLL
  for (int lane = 0; lane < kCount; ++lane) rounded[lane] = static_cast<scalar_t>(values[lane]);
  store_lanes(dst, rounded);
}

// ---------------------------------------------------------------------------------------------
// Layout arithmetic

// Pool2dGeometry in the kernels' index type; built after fits_int32 decided, so the casts are exact.
template <typename index_t>
struct PoolParams {
  index_t C, H, W, OH, OW;
  index_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename index_t>
PoolParams<index_t> pool_params(const Pool2dGeometry& g) {
  const auto as_index = [](int64_t v) { return static_cast<index_t>(v); };
  return {as_index(g.C),  as_index(g.H),  as_index(g.W),  as_index(g.OH), as_index(g.OW),
          as_index(g.kh), as_index(g.kw), as_index(g.sh), as_index(g.sw), as_index(g.ph),
          as_index(g.pw), as_index(g.dh), as_index(g.dw)};
}

// Which (image, channel) a work item belongs to and where it sits spatially. In NCHW `image` is
// the (n, c) plane and `channel` is 0; in NHWC `image` is n and `channel` the item's first channel.
template <typename index_t>
struct Position {
  index_t image, channel, y, x;
};

// Splits a linear work index over a (rows x cols) grid. NCHW items advance along x first, so
// neighbouring threads touch neighbouring W elements; NHWC items advance along the channel groups
// first, so neighbouring threads touch neighbouring 16-byte vectors of one pixel.
template <bool kChannelsLast, int kLanes, typename index_t>
C10_HOST_DEVICE inline Position<index_t> position_of(index_t linear, index_t channels, index_t rows, index_t cols) {
  index_t channel = 0;
  if constexpr (kChannelsLast) {
    const index_t groups = channels / kLanes;
    channel = (linear % groups) * kLanes;
    linear /= groups;
  }
  const index_t x = linear % cols;
  linear /= cols;
  const index_t y = linear % rows;
  return {linear / rows, channel, y, x};
}

// Element (y, x) of one (image, channel) of a (rows x cols) tensor lives at
// base + (y * cols + x) * pixel_stride in either layout.
template <typename index_t>
struct PlaneView {
  index_t base, cols, pixel_stride;

  C10_HOST_DEVICE index_t offset(index_t y, index_t x) const { return base + (y * cols + x) * pixel_stride; }
};

template <bool kChannelsLast, typename index_t>
C10_HOST_DEVICE inline PlaneView<index_t> plane_view(const Position<index_t>& pos, index_t channels, index_t rows,
                                                     index_t cols) {
  if constexpr (kChannelsLast) {
    return {pos.image * rows * cols * channels + pos.channel, cols, channels};
  } else {
    return {pos.image * rows * cols, cols, index_t{1}};
  }
}

// ---------------------------------------------------------------------------------------------
// Window arithmetic shared by forward and backward

// Rows (or columns) [begin, end) of a plane.
template <typename index_t>
struct Span {
  index_t begin, end;

  C10_HOST_DEVICE index_t size() const { return end - begin; }
};

// Outputs o whose window span [o*stride - pad, o*stride - pad + extent) contains input position i,
// with extent = (k-1)*d + 1.
template <typename index_t>
C10_HOST_DEVICE inline Span<index_t> covering_windows(index_t i, index_t pad, index_t extent, index_t stride,
                                                      index_t outputs) {
  return {i + pad < extent ? index_t{0} : (i + pad - extent) / stride + 1, std::min((i + pad) / stride + 1, outputs)};
}

// Adaptive output o of `outs` over `ins` inputs covers [floor(o*ins/outs), ceil((o+1)*ins/outs)).
// With the roles swapped the same formulas give the outputs that cover input o.
template <typename index_t>
C10_HOST_DEVICE inline Span<index_t> adaptive_span(index_t o, index_t ins, index_t outs) {
  return {o * ins / outs, ((o + 1) * ins + outs - 1) / outs};
}

// ---------------------------------------------------------------------------------------------
// The work of one item, over its kLanes channels (one in NCHW)

// torch's max rule: NaN always replaces (so the last NaN's index is kept), ties keep the first max.
template <typename acc>
C10_HOST_DEVICE inline bool replaces_max(acc candidate, acc best) {
  return candidate > best || at::_isnan(candidate);
}

// Max pooling forward of one item: the maximum over the taps (ih, iw) with ih = rows.begin,
// rows.begin + row_step, ... below rows.end (likewise iw), and the winner's plane index ih * W + iw.
// The row-major scan fixes which tie and which NaN win. The index starts at first_index, so a
// window of -inf (never replaced) still names the element the caller chose.
template <typename scalar_t, typename index_t, int kLanes>
C10_HOST_DEVICE inline void max_over_taps(const scalar_t* input, const PlaneView<index_t>& in, index_t W,
                                          Span<index_t> rows, index_t row_step, Span<index_t> cols,
                                          index_t col_step, int64_t first_index, acc_t<scalar_t> (&best)[kLanes],
                                          int64_t (&best_index)[kLanes]) {
  using acc = acc_t<scalar_t>;
  BIGKERN_UNROLL
  for (int lane = 0; lane < kLanes; ++lane) {
    best[lane] = -std::numeric_limits<acc>::infinity();
    best_index[lane] = first_index;
  }
  for (index_t ih = rows.begin; ih < rows.end; ih += row_step) {
    for (index_t iw = cols.begin; iw < cols.end; iw += col_step) {
      scalar_t tap[kLanes];
      load_lanes(input + in.offset(ih, iw), tap);
      const index_t tap_index = ih * W + iw;
      BIGKERN_UNROLL
      for (int lane = 0; lane < kLanes; ++lane) {
        const acc value = static_cast<acc>(tap[lane]);
        if (replaces_max(value, best[lane])) {
          best[lane] = value;
          best_index[lane] = tap_index;
        }
      }
    }
  }
}

// Adds the kLanes values at src to sum (the average pools' forward).
template <typename scalar_t, int kLanes>
C10_HOST_DEVICE inline void add_lanes(const scalar_t* src, acc_t<scalar_t> (&sum)[kLanes]) {
  scalar_t values[kLanes];
  load_lanes(src, values);
  BIGKERN_UNROLL
  for (int lane = 0; lane < kLanes; ++lane) sum[lane] += static_cast<acc_t<scalar_t>>(values[lane]);
}

// Adds the window rows x cols of a plane to sum.
template <typename scalar_t, typename index_t, int kLanes>
C10_HOST_DEVICE inline void sum_window(const scalar_t* input, const PlaneView<index_t>& in, Span<index_t> rows,
                                       Span<index_t> cols, acc_t<scalar_t> (&sum)[kLanes]) {
  for (index_t ih = rows.begin; ih < rows.end; ++ih) {
    for (index_t iw = cols.begin; iw < cols.end; ++iw) add_lanes(input + in.offset(ih, iw), sum);
  }
}

// Divides each of kLanes sums by divisor (the average pools' forward).
template <typename acc, int kLanes>
C10_HOST_DEVICE inline void divide_lanes(acc (&sum)[kLanes], acc divisor) {
  BIGKERN_UNROLL
  for (int lane = 0; lane < kLanes; ++lane) sum[lane] /= divisor;
}

// Adds grad[lane] / divisor to sum[lane] (the average pools' backward).
template <typename scalar_t, int kLanes>
C10_HOST_DEVICE inline void add_divided(const scalar_t* grad_output, acc_t<scalar_t> divisor,
                                        acc_t<scalar_t> (&sum)[kLanes]) {
  scalar_t grad[kLanes];
  load_lanes(grad_output, grad);
  BIGKERN_UNROLL
  for (int lane = 0; lane < kLanes; ++lane) sum[lane] += static_cast<acc_t<scalar_t>>(grad[lane]) / divisor;
}

// Max pooling backward of one item: adds to sum the gradients of the outputs rows x cols of plane
// `out` whose forward index names own_index.
template <typename scalar_t, typename index_t, int kLanes>
C10_HOST_DEVICE inline void add_routed_grads(const scalar_t* grad_output, const int64_t* indices,
                                             const PlaneView<index_t>& out, Span<index_t> rows, Span<index_t> cols,
                                             int64_t own_index, acc_t<scalar_t> (&sum)[kLanes]) {
  for (index_t oh = rows.begin; oh < rows.end; ++oh) {
    for (index_t ow = cols.begin; ow < cols.end; ++ow) {
      const index_t offset = out.offset(oh, ow);
      int64_t argmax[kLanes];
      load_lanes(indices + offset, argmax);
      bool any_match = false;
      BIGKERN_UNROLL
      for (int lane = 0; lane < kLanes; ++lane) any_match |= argmax[lane] == own_index;
      // Most windows picked another element: skip their gradient load.
      if (!any_match) continue;
      scalar_t grad[kLanes];
      load_lanes(grad_output + offset, grad);
      BIGKERN_UNROLL
      for (int lane = 0; lane < kLanes; ++lane) {
        if (argmax[lane] == own_index) sum[lane] += static_cast<acc_t<scalar_t>>(grad[lane]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Turning runtime choices into template arguments (generic lambdas receive them as types).

template <typename Body>
void with_index_type(bool use_int32, Body&& body) {
  if (use_int32) {
    body(int32_t{});
  } else {
    body(int64_t{});
  }
}

template <typename Body>
void with_bool(bool value, Body&& body) {
  if (value) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// NCHW (one element per item), NHWC with a 16-byte channel vector per item, or NHWC with one
// channel per item when C or the pointers do not allow vectors. Calls body(channels_last, lanes).
template <typename scalar_t, typename Body>
void with_layout(bool channels_last, bool vectorized, Body&& body) {
  using OneLane = std::integral_constant<int, 1>;
  using VectorLanes = std::integral_constant<int, kVectorLanes<scalar_t>>;
  if (!channels_last) {
    body(std::false_type{}, OneLane{});
  } else if (vectorized) {
    body(std::true_type{}, VectorLanes{});
  } else {
    body(std::true_type{}, OneLane{});
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: allocation and launch

// Launches Item<scalar_t, index_t, kChannelsLast, kLanes, kFlags...>{fields..., PoolParams<index_t>}
// once per element of `items` (per vector of kLanes channels in vectorized NHWC). index_t is int32_t
// where fits_int32 allows it for `items` and `other`, else int64_t; the layout variant follows the
// geometry and whether all of `pointers` allow 16-byte vectors (see with_layout). kFlags: the
// functor's own template arguments after kLanes, if any.
template <template <typename, typename, bool, int, bool...> class Item, typename scalar_t, bool... kFlags,
          typename... Fields>
void launch_items(const Pool2dGeometry& g, const at::Tensor& items, const at::Tensor& other,
                  std::initializer_list<const void*> pointers, const Fields&... fields) {
  const bool vectorized = nhwc_vectorizable<scalar_t>(g, pointers);
  with_index_type(fits_int32(g, {items.numel(), other.numel()}), [&](auto index_zero) {
    using index_t = decltype(index_zero);
    with_layout<scalar_t>(g.channels_last, vectorized, [&](auto channels_last, auto lanes) {
      using WorkItem = Item<scalar_t, index_t, decltype(channels_last)::value, decltype(lanes)::value, kFlags...>;
      launch_work_items(WorkItem{fields..., pool_params<index_t>(g)}, items.numel() / decltype(lanes)::value);
    });
  });
}

// Uninitialised (N, C, OH, OW) result in the geometry's layout.
inline at::Tensor empty_pooled(const Pool2dGeometry& g, const at::TensorOptions& options) {
  return at::empty({g.N, g.C, g.OH, g.OW}, options, memory_format(g));
}

// The max pools' index result: int64 shaped like the output, or empty unless compute_indices.
inline at::Tensor empty_indices(const Pool2dGeometry& g, const at::TensorOptions& options, bool compute_indices) {
  const at::TensorOptions index_options = options.dtype(at::kLong);
  return compute_indices ? empty_pooled(g, index_options) : at::empty({0}, index_options);
}

// Geometry of an adaptive pool's backward, checked against grad_output: the output size is not an
// argument of the backward, grad_output carries it.
inline Pool2dGeometry adaptive_backward_geometry(const at::Tensor& grad_output, const at::Tensor& self,
                                                 const char* op) {
  TORCH_CHECK(grad_output.dim() == 4, op, ": expected a 4-D grad_output, got ", grad_output.dim(), "-D of shape ",
              grad_output.sizes());
  const Pool2dGeometry g = adaptive_geometry(self, grad_output.sizes().slice(2), op);
  check_grad_output(grad_output, g, self, op);
  return g;
}

}  // namespace bigkern::cuda_pool
