// Times the CPU convolution kernel (the AVX-512 build, whose forward runs on the AMX tiles where
// the processor has them and BIGKERN_CPU_AMX is not 0) on the acceptance shape,
// 3x3 stride 1, (8, 64, 56, 56) -> 64 channels, float32, without Python, torch dispatch or
// allocation in the loop: a steadier instrument than `bigkern bench` for comparing two versions of
// conv_kernels.h on a noisy host. Build each version into its own binary and run them in turns
// (the host's speed drifts by 10-30% between minutes, so only interleaved runs compare):
//
//   T=$(python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
//   g++ -O3 -fno-math-errno -fopenmp -std=c++17 [-I<dir with an edited cpu/conv_kernels.h>] -Icsrc \
//       -I$T/include -o conv_timing benchmarks/cpu/conv_kernel_timing.cpp csrc/cpu/conv_kernels_avx512.cpp csrc/cpu/isa.cpp \
//       -L$T/lib -ltorch_cpu -lc10 -Wl,-rpath,$T/lib
//   for i in 1 2 3; do OMP_NUM_THREADS=1 ./conv_timing_old; OMP_NUM_THREADS=1 ./conv_timing_new; done
//
// Arguments: [nchw] writes an NCHW output (the staged copy-out) instead of channels_last;
// [repeats] (default 15). Prints the fastest call and a checksum (correctness is the tests' job:
// tests/ops/test_conv.py).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/conv_kernel_table.h"

int main(int argc, char** argv) {
  using namespace bigkern::cpu;
  const bool nchw_out = argc > 1 && std::strcmp(argv[1], "nchw") == 0;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 15;
  const int64_t N = 8, C = 64, H = 56, W = 56, K = 64;
  const ConvShape s{N, C, H, W, K, 3, 3, H, W, 1, 1, 1, 1, 1, 1, 1};
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  std::vector<float> x(N * H * W * C), w(K * C * 9), b(K), y(N * H * W * K);
  for (auto* v : {&x, &w, &b})
    for (float& e : *v) e = uniform(rng);
  ConvForwardArgs a{};
  a.x = x.data(), a.input = Strided{x.data(), H * W * C, 1, W * C, C}, a.weight = w.data(), a.bias = b.data();
  a.out = nchw_out ? Strided{y.data(), K * H * W, H * W, W, 1} : Strided{y.data(), H * W * K, 1, W * K, K};
  const ConvKernelTable& table = avx512::conv_kernels();
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    table.forward(s, a, false);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  double checksum = 0;
  for (float e : y) checksum += e;
  std::printf("%s output: %.2f ms, %.1f GFLOP/s (checksum %.6g)\n", nchw_out ? "NCHW" : "channels_last", best * 1e3,
              2.0 * N * H * W * K * C * 9 / best / 1e9, checksum);
}
