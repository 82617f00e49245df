// Runs the CUDA convolution kernels (csrc/cuda/conv/*.cuh) on the CPU under the SIMT emulator for
// a problem written by tests/cuda_host/test_conv_emulation.py, with the layouts conv.cpp prepares
// (x and grad_z channels-last, weights KRSC), and writes every result back as float32 NCHW / KCRS
// for the test to compare with torch in float64.
//
// Usage: emulate_conv DIR SEED. DIR/problem.txt: "N C H W K R S stride_h stride_w pad_top pad_left
// pad_bottom pad_right dilation_h dilation_w groups dtype activation bias residual path" with dtype
// 0 float32, 1 float16, 2 bfloat16, 3 float64 and path 0 SIMT, 1 tensor cores, 2 depthwise.
// Inputs x, weight (KCRS), bias, residual, grad (NCHW) are raw float32 files in DIR, rounded to the
// dtype on the way in; outputs out, pre, grad_input, grad_weight, grad_bias, grad_pre.
#include <cuda_runtime.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "cuda/conv/conv_mma.cuh"

using namespace bigkern::cuda::conv;

namespace bigkern::cuda::conv {
alignas(16) unsigned char conv_shared[1 << 17];  // the kernels' dynamic shared memory
}

using Vec = std::vector<float>;
static std::string dir;

Vec load(const std::string& name, size_t count) {
  Vec v(count);
  std::ifstream in(dir + "/" + name, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(float)))) {
    std::fprintf(stderr, "cannot read %s\n", name.c_str());
    std::exit(2);
  }
  return v;
}

void save(const std::string& name, const Vec& v) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
}

template <typename T>
T from_float(float x) {
  return from_acc<T>(static_cast<acc_t<T>>(x));
}

template <typename T>
std::vector<T> nchw_to_nhwc(const Vec& v, int N, int C, int H, int W) {
  std::vector<T> out(v.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w) out[((n * H + h) * W + w) * C + c] = from_float<T>(v[((n * C + c) * H + h) * W + w]);
  return out;
}

template <typename T>
Vec to_floats(const std::vector<T>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(to_acc(v[i]));
  return out;
}

Strides nchw(const Geometry& g, int C, int H, int W) { return {int64_t{C} * H * W, int64_t{H} * W, W, 1}; }

template <typename T>
void run(Geometry g, int activation, bool with_bias, bool with_residual, int path, uint64_t seed) {
  using A = acc_t<T>;
  const emu::Options timing[2] = {{emu::CopyTiming::kAtIssue, seed}, {emu::CopyTiming::kAtWait, seed + 1}};
  const size_t x_size = size_t(g.N) * g.C * g.H * g.W, w_size = size_t(g.K) * g.Cg * g.R * g.S;
  const size_t out_size = size_t(g.N) * g.K * g.P * g.Q;
  const auto x = nchw_to_nhwc<T>(load("x", x_size), g.N, g.C, g.H, g.W);
  const Vec w_kcrs = load("weight", w_size);
  std::vector<T> w_krsc(w_size);
  for (int k = 0; k < g.K; ++k)
    for (int c = 0; c < g.Cg; ++c)
      for (int t = 0; t < g.R * g.S; ++t) w_krsc[(size_t(k) * g.R * g.S + t) * g.Cg + c] = from_float<T>(w_kcrs[(size_t(k) * g.Cg + c) * g.R * g.S + t]);
  std::vector<T> bias, residual;
  if (with_bias) for (float v : load("bias", g.K)) bias.push_back(from_float<T>(v));
  if (with_residual) for (float v : load("residual", out_size)) residual.push_back(from_float<T>(v));
  std::vector<T> out(out_size), pre(out_size);

  ForwardParams p{};
  p.g = g, p.x = x.data(), p.weight = w_krsc.data(), p.bias = with_bias ? bias.data() : nullptr;
  p.residual = with_residual ? residual.data() : nullptr, p.residual_strides = nchw(g, g.K, g.P, g.Q);
  p.out = out.data(), p.out_strides = nchw(g, g.K, g.P, g.Q);
  p.pre = pre.data(), p.pre_strides = nchw(g, g.K, g.P, g.Q);
  p.activation = activation;
  const unsigned rows = unsigned(g.N) * g.P * g.Q;
  if (path == 2) {
    emu::launch({(rows * g.C + 255) / 256, 1, 1}, {256, 1, 1}, conv_shared, 0, [&] { depthwise_forward_kernel<T>(p); }, timing[0]);
  } else if (path == 1) {
    if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
      for (const auto& options : timing)  // both cp.async timings: a missing wait shows up in one of them
        emu::launch({(rows + kMmaRows - 1) / kMmaRows, unsigned(g.Kg + kMmaCols - 1) / kMmaCols, unsigned(g.groups)},
                    {kMmaThreads, 1, 1}, conv_shared, mma_shared_bytes(), [&] { forward_mma_kernel<T>(p); }, options);
    }
  } else {
    emu::launch({(rows + kTile - 1) / kTile, unsigned(g.Kg + kTile - 1) / kTile, unsigned(g.groups)}, {16, 16, 1},
                conv_shared, sizeof(SimtShared<A>), [&] { forward_simt_kernel<T>(p); }, timing[0]);
  }
  save("out", to_floats(out));
  save("pre", to_floats(pre));

  // Backward: grad_z, bias gradient, dgrad, wgrad (two splits) and its reduction.
  const auto grad = nchw_to_nhwc<T>(load("grad", out_size), g.N, g.K, g.P, g.Q);
  const auto act_in = nchw_to_nhwc<T>(to_floats(activation == 1 ? out : pre), g.N, g.K, g.P, g.Q);
  std::vector<T> grad_z = grad;
  if (activation != 0)
    emu::launch({4, 1, 1}, {64, 1, 1}, conv_shared, 0,
                [&] { preactivation_grad_kernel<T>(grad.data(), act_in.data(), grad_z.data(), int64_t(out_size), activation); },
                timing[0]);
  std::vector<T> grad_bias(g.K);
  emu::launch({unsigned(g.K + 31) / 32, 1, 1}, {32, 8, 1}, conv_shared, 32 * 8 * sizeof(A),
              [&] { bias_grad_kernel<T>(grad_z.data(), grad_bias.data(), int64_t(rows), g.K); }, timing[0]);
  std::vector<T> grad_input(x_size), grad_weight(w_size);
  BackwardParams b{};
  b.g = g, b.grad_z = grad_z.data(), b.x = x.data(), b.weight = w_krsc.data();
  b.grad_input = grad_input.data(), b.grad_input_strides = nchw(g, g.C, g.H, g.W);
  emu::launch({unsigned(g.N * g.H * g.W + kTile - 1) / kTile, unsigned(g.Cg + kTile - 1) / kTile, unsigned(g.groups)},
              {16, 16, 1}, conv_shared, sizeof(SimtShared<A>), [&] { dgrad_simt_kernel<T>(b); }, timing[0]);
  b.splits = 2;
  std::vector<A> partial(size_t(b.splits) * w_size);
  b.weight_partial = partial.data();
  emu::launch({unsigned(g.Kg + kTile - 1) / kTile, unsigned(g.Cg + kTile - 1) / kTile, unsigned(g.groups * g.R * g.S * b.splits)},
              {16, 16, 1}, conv_shared, sizeof(SimtShared<A>), [&] { wgrad_simt_kernel<T>(b); }, timing[0]);
  emu::launch({2, 1, 1}, {64, 1, 1}, conv_shared, 0, [&] { wgrad_reduce_kernel<T>(b, grad_weight.data()); }, timing[0]);
  save("grad_input", to_floats(grad_input));
  save("grad_weight", to_floats(grad_weight));
  save("grad_bias", to_floats(grad_bias));
  Vec grad_pre(out_size);  // back to NCHW
  for (int n = 0; n < g.N; ++n)
    for (int k = 0; k < g.K; ++k)
      for (int i = 0; i < g.P * g.Q; ++i)
        grad_pre[(size_t(n) * g.K + k) * g.P * g.Q + i] = static_cast<float>(to_acc(grad_z[(size_t(n) * g.P * g.Q + i) * g.K + k]));
  save("grad_pre", grad_pre);
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  dir = argv[1];
  const uint64_t seed = std::stoull(argv[2]);
  std::ifstream problem(dir + "/problem.txt");
  Geometry g{};
  int pad_bottom, pad_right, dtype, activation, bias, residual, path;
  problem >> g.N >> g.C >> g.H >> g.W >> g.K >> g.R >> g.S >> g.stride_h >> g.stride_w >> g.pad_top >> g.pad_left >>
      pad_bottom >> pad_right >> g.dilation_h >> g.dilation_w >> g.groups >> dtype >> activation >> bias >> residual >> path;
  if (!problem) return 2;
  g.Cg = g.C / g.groups, g.Kg = g.K / g.groups;
  g.P = (g.H + g.pad_top + pad_bottom - g.dilation_h * (g.R - 1) - 1) / g.stride_h + 1;
  g.Q = (g.W + g.pad_left + pad_right - g.dilation_w * (g.S - 1) - 1) / g.stride_w + 1;
  switch (dtype) {
    case 0: run<float>(g, activation, bias, residual, path, seed); break;
    case 1: run<__half>(g, activation, bias, residual, path, seed); break;
    case 2: run<__nv_bfloat16>(g, activation, bias, residual, path, seed); break;
    default: run<double>(g, activation, bias, residual, path, seed); break;
  }
  return 0;
}
