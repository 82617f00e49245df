// Runs the CUDA recurrent step kernels (csrc/cuda/rnn/rnn_kernels.cuh) on the CPU under the SIMT
// emulator (float16/bfloat16 layers on the emulated tensor-core mma), with the host-side step loop of csrc/cuda/rnn/rnn.cpp (the per-step path), for a
// problem written by tests/cuda_host/test_rnn_emulation.py, and writes every result back for it
// to compare with bigkern/reference/rnn.py. The products rnn.cpp gives to cuBLAS are plain loops.
//
// Usage: emulate_rnn DIR SEED. DIR/problem.txt: "mode batch hidden input cell reverse bias dtype
// steps size_0 size_1 ..." (dtype 0 float32, 1 float16, 2 bfloat16); inputs and outputs are raw
// float32 files in DIR (tensor-dtype values are rounded to dtype on the way in and out).
#include <cuda_runtime.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "cuda/rnn/rnn_kernels.cuh"

using namespace bigkern::cuda::rnn;

// The dynamic shared memory the kernels declare (extern __shared__ rnn_shared).
namespace bigkern::cuda::rnn {
alignas(16) unsigned char rnn_shared[1 << 16];
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
std::vector<T> to_dtype(const Vec& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_float<T>(v[i]);
  return out;
}

template <typename T>
Vec from_dtype(const std::vector<T>& v) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_float(v[i]);
  return out;
}

template <typename T, int MODE>
void run(int64_t B, int64_t H, int64_t I, bool cell, bool reverse, bool bias, const std::vector<int64_t>& sizes,
         uint64_t seed) {
  constexpr int G = gate_count(MODE);
  const int64_t steps = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> offsets(steps), order_off, order_size;
  int64_t N = 0;
  for (int64_t t = 0; t < steps; ++t) {
    offsets[t] = N;
    N += sizes[t];
  }
  for (int64_t i = 0; i < steps; ++i) {
    const int64_t t = reverse ? steps - 1 - i : i;
    order_off.push_back(offsets[t]);
    order_size.push_back(sizes[t]);
  }
  const int64_t W = MODE == 0 ? 5 * H : MODE == 1 ? 4 * H : H;
  const auto w_hh = to_dtype<T>(load("w_hh", G * H * H));
  const auto b_hh = bias ? to_dtype<T>(load("b_hh", G * H)) : std::vector<T>();
  const auto b_ih = bias && cell ? to_dtype<T>(load("b_ih", G * H)) : std::vector<T>();
  const auto x_proj = cell ? std::vector<T>() : to_dtype<T>(load("x_proj", N * G * H));
  const auto input = cell ? to_dtype<T>(load("input", B * I)) : std::vector<T>();
  const auto w_ih = cell ? to_dtype<T>(load("w_ih", G * H * I)) : std::vector<T>();
  Vec state[2] = {from_dtype(to_dtype<T>(load("hx", B * H))), Vec(B * H, 0.f)};
  state[1] = state[0];
  Vec c = MODE == 0 ? from_dtype(to_dtype<T>(load("cx", B * H))) : Vec();
  const Vec c0 = c, h0 = state[0];
  std::vector<T> output(static_cast<size_t>(N * H));
  Vec ws(static_cast<size_t>(N * W), std::numeric_limits<float>::quiet_NaN());

  StepParams p{};
  p.mode = MODE;
  p.batch = B;
  p.hidden = H;
  p.out_size = H;
  p.input_size = I;
  p.steps = cell ? 1 : steps;
  p.x_proj = cell ? nullptr : x_proj.data();
  p.input = cell ? input.data() : nullptr;
  p.w_ih = cell ? w_ih.data() : nullptr;
  p.w_hh = w_hh.data();
  p.b_ih = b_ih.empty() ? nullptr : b_ih.data();
  p.b_hh = b_hh.empty() ? nullptr : b_hh.data();
  p.h_state[0] = state[0].data();
  p.h_state[1] = state[1].data();
  p.c_state = MODE == 0 ? c.data() : nullptr;
  p.output = output.data();
  p.workspace = ws.data();
  p.ws_width = W;
  constexpr int64_t units = 8;  // as launch_step_forward
  const unsigned blocks = static_cast<unsigned>((H + units - 1) / units);
  int cur = 0;
  for (int64_t v = 0; v < p.steps; ++v) {
    const int64_t off = cell ? 0 : order_off[v], size = cell ? B : order_size[v];
    emu::launch({blocks, 1, 1}, {256, 1, 1}, rnn_shared, step_shared_bytes<T>(MODE, units),
                [&] { step_kernel<T, MODE>(p, off, size, cur, units); },
                emu::Options{emu::CopyTiming::kAtIssue, seed + v});
    cur = 1 - cur;
  }
  save("output", from_dtype(output));
  save("hy", state[cur]);
  save("cy", c);
  save("ws", ws);

  // Backward, as rnn.cpp's loop (or the cell's single step).
  const Vec w_hh_f = from_dtype(w_hh);
  const Vec go = from_dtype(to_dtype<T>(load("grad_output", (cell ? B : N) * H)));
  Vec dh = cell ? Vec(B * H, 0.f) : from_dtype(to_dtype<T>(load("grad_hy", B * H)));
  Vec dc = MODE == 0 ? from_dtype(to_dtype<T>(load("grad_cy", B * H))) : Vec();
  const int64_t rows_total = cell ? B : N;
  std::vector<T> grad_x(static_cast<size_t>(rows_total * G * H));
  Vec d_rec(static_cast<size_t>(rows_total * G * H), 0.f), direct(static_cast<size_t>(B * H), 0.f);
  const Vec out_f = from_dtype(output);
  for (int64_t v = p.steps - 1; v >= 0; --v) {
    const int64_t off = cell ? 0 : order_off[v], size = cell ? B : order_size[v];
    Vec d(static_cast<size_t>(size * H)), c_prev(static_cast<size_t>(size * H)), h_prev(static_cast<size_t>(size * H));
    for (int64_t b = 0; b < size; ++b) {
      const bool live_before = v > 0 && order_size[v - 1] > b;
      for (int64_t j = 0; j < H; ++j) {
        d[b * H + j] = go[(off + b) * H + j] + dh[b * H + j];
        h_prev[b * H + j] = live_before ? out_f[(order_off[v - 1] + b) * H + j] : h0[b * H + j];
        if (MODE == 0) c_prev[b * H + j] = live_before ? ws[(order_off[v - 1] + b) * W + 4 * H + j] : c0[b * H + j];
      }
    }
    BackwardParams bp{};
    bp.mode = MODE;
    bp.rows = size;
    bp.hidden = H;
    bp.ws_width = W;
    bp.row_offset = off;
    bp.dh = d.data();
    bp.dc = MODE == 0 ? dc.data() : nullptr;
    bp.ws = ws.data();
    bp.c_prev = c_prev.data();
    bp.h_prev = h_prev.data();
    bp.grad_x = grad_x.data();
    bp.d_rec = d_rec.data();
    bp.direct = direct.data();
    const unsigned bwd_blocks = static_cast<unsigned>((size * H + 255) / 256);
    emu::launch({bwd_blocks, 1, 1}, {256, 1, 1}, nullptr, 0, [&] { gates_backward_kernel<T, MODE>(bp); },
                emu::Options{emu::CopyTiming::kAtIssue, seed + 1000 + v});
    for (int64_t b = 0; b < size; ++b) {
      for (int64_t k = 0; k < H; ++k) {
        double sum = MODE == 1 ? direct[b * H + k] : 0.0;
        for (int64_t q = 0; q < G * H; ++q) sum += double(d_rec[(off + b) * G * H + q]) * w_hh_f[q * H + k];
        dh[b * H + k] = static_cast<float>(sum);
      }
    }
  }
  save("grad_x", from_dtype(grad_x));
  save("d_rec", d_rec);
  save("grad_hx", dh);
  save("grad_cx", dc);
  save("direct", direct);
}

template <typename T>
void by_mode(int mode, int64_t B, int64_t H, int64_t I, bool cell, bool reverse, bool bias,
             const std::vector<int64_t>& sizes, uint64_t seed) {
  switch (mode) {
    case 0: return run<T, 0>(B, H, I, cell, reverse, bias, sizes, seed);
    case 1: return run<T, 1>(B, H, I, cell, reverse, bias, sizes, seed);
    case 2: return run<T, 2>(B, H, I, cell, reverse, bias, sizes, seed);
    default: return run<T, 3>(B, H, I, cell, reverse, bias, sizes, seed);
  }
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: emulate_rnn DIR SEED\n");
    return 2;
  }
  dir = argv[1];
  const uint64_t seed = std::stoull(argv[2]);
  std::ifstream problem(dir + "/problem.txt");
  int mode, cell, reverse, bias, dtype;
  int64_t B, H, I, steps;
  problem >> mode >> B >> H >> I >> cell >> reverse >> bias >> dtype >> steps;
  std::vector<int64_t> sizes(steps);
  for (auto& s : sizes) problem >> s;
  if (!problem) {
    std::fprintf(stderr, "bad problem.txt\n");
    return 2;
  }
  if (dtype == 0) by_mode<float>(mode, B, H, I, cell, reverse, bias, sizes, seed);
  if (dtype == 1) by_mode<__half>(mode, B, H, I, cell, reverse, bias, sizes, seed);
  if (dtype == 2) by_mode<__nv_bfloat16>(mode, B, H, I, cell, reverse, bias, sizes, seed);
  std::printf("done\n");
  return 0;
}
