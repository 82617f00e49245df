// The CPU convolution kernels as a table of functions, one table per instruction set
// (conv_kernels_avx512.cpp, conv_kernels_avx512_narrow.cpp, conv_kernels_avx2.cpp,
// conv_kernels_baseline.cpp). conv.cpp validates the arguments, brings
// the operands into the layouts below, picks the table once at run time and calls it. The
// kernels compute in T = float (float32 and bfloat16 tensors; conv.cpp converts bfloat16) or
// T = double (float64, the gradcheck dtype); `is_double` says which.
#pragma once

#include <cstdint>

namespace bigkern::cpu {

// The convolution's shape (csrc/schema/conv.cpp): input (N, C, H, W), weight (K, C/G, R, S),
// output (N, K, P, Q).
struct ConvShape {
  int64_t N, C, H, W, K, R, S, P, Q;
  int64_t stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups;
};

// Depthwise convolution (one input and one output channel per group): the kernels give it its own
// path (channels as vector lanes), and conv.cpp sizes its tile by all C channels.
inline bool is_depthwise(const ConvShape& s) { return s.groups == s.C && s.groups == s.K && s.C > 1; }

// Input channels up to which a layer counts as a network's first layer (1 or 3 channels, LeNet's
// 6): its forward gathers patches (conv_kernels.h: uses_patches) or, where the input's pixels are
// contiguous along a row, the horizontal stride is 1 and the output rows fill two AVX2 vectors,
// runs conv_direct_rows.h (LeNet's 28-pixel rows: 4x faster than patches; its 10-pixel rows: 2x
// slower, most lanes empty).
constexpr int64_t kFewChannels = 8;
inline bool direct_rows_conv(const ConvShape& s) {
  return s.groups == 1 && s.C <= kFewChannels && s.stride_w == 1 && s.Q >= 16;
}

// Whether a float32 forward runs on the AMX tiles (conv_amx.h): the processor has them
// (amx_tiles_ready, cpu/isa.h) and the layer fills a reduction of 32-channel chunks and
// 16-channel output tiles at least half.
bool amx_conv_runs(const ConvShape& s);

// A 4-D tensor addressed by element strides in (n, c, h, w) order: outputs are written in the
// caller's layout (NCHW, channels_last or a view) without a copy.
struct Strided {
  void* data = nullptr;
  int64_t sn = 0, sc = 0, sh = 0, sw = 0;
};

struct ConvForwardArgs {
  const void* x;       // (N, H, W, C) contiguous (channels_last storage), or null where `input` is as given
  Strided input;       // x, or the input as given where amx_conv_runs (float32) or direct_rows_conv (any
                       // strides; the direct kernel runs where its pixels are contiguous along a row)
  const void* weight;  // (K, C/G, R, S) contiguous
  const void* bias;    // (K) or null
  Strided residual;    // (N, K, P, Q) or data == null
  Strided out;         // (N, K, P, Q)
  Strided preact;      // (N, K, P, Q) or data == null
  int64_t activation;  // 0 none, 1 relu, 2 gelu, 3 silu
  bool bfloat16_operands = false;  // x and weight hold bfloat16 values (widened): one AMX part suffices
};

struct ConvBackwardArgs {
  const void* grad_output;       // (N, P, Q, K) contiguous
  const void* activation_input;  // (N, P, Q, K) contiguous, or null when activation == 0
  const void* x;                 // (N, H, W, C) contiguous
  const void* weight;            // (K, C/G, R, S) contiguous
  int64_t activation;
  void* grad_z;                  // (N, P, Q, K) contiguous scratch, filled by the kernel; null without an activation
  Strided grad_input;            // (N, C, H, W) or data == null
  void* grad_weight;             // (K, C/G, R, S) contiguous, or null
  void* grad_bias;               // (K) or null
  Strided grad_preact;           // (N, K, P, Q) or data == null
  // Set (and the channels-last operands above left null) where conv.cpp takes the direct row
  // weight gradient (conv_direct_rows.h): input, output gradient and activation input as given,
  // each with rows of contiguous pixels; only grad_weight and grad_bias are wanted then.
  Strided input_rows, grad_output_rows, activation_rows;
};

struct ConvKernelTable {
  void (*forward)(const ConvShape& s, const ConvForwardArgs& a, bool is_double);
  void (*backward)(const ConvShape& s, const ConvBackwardArgs& a, bool is_double);
};

namespace baseline {
const ConvKernelTable& conv_kernels();
}
namespace avx2 {
const ConvKernelTable& conv_kernels();
}
namespace avx512 {
const ConvKernelTable& conv_kernels();
}
namespace avx512_narrow {
const ConvKernelTable& conv_kernels();
}

}  // namespace bigkern::cpu
