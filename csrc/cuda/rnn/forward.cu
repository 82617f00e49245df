// The CUDA recurrent forward: the persistent whole-sequence kernel and the per-step kernel (the
// fallback, the projection's path, and the cell), both built on step_tile (rnn_device.cuh).
//
// Persistent kernel: a cooperative launch of about one block per SM; block i copies the rows of
// w_hh that belong to its hidden units (all G gates of them) into shared memory once and keeps
// them there for every step; per step it computes its units for every live row, writes h' into
// the other state buffer, and the grid meets at one grid-wide barrier (cooperative groups'
// grid.sync(), which needs the co-residency the cooperative launch guarantees). The host picks
// the fewest units per block whose slice fits in shared memory while every block stays resident;
// when none does (very large hidden sizes), or for the projection, the per-step kernel runs.
// float16/bfloat16 layers multiply on tensor cores (step_tile_mma: mma.m16n8k16, the slice read
// from shared memory as the B operand, gate sums staged in shared memory after the slice);
// float32 and the cells use the FMA path (step_tile).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/rnn/rnn_kernels.cuh"

namespace bigkern::cuda::rnn {
namespace {

// Bytes of a block's w_hh slice, rounded up to 16 so the staged sums that follow stay aligned.
__host__ __device__ constexpr size_t slice_bytes(int gates, int64_t units, int64_t out_size, size_t element) {
  return (static_cast<size_t>(gates) * units * out_size * element + 15) / 16 * 16;
}

template <typename T, int MODE>
__global__ void __launch_bounds__(kThreads) persistent_kernel(StepParams p, int64_t units) {
  extern __shared__ __align__(16) unsigned char rnn_shared[];
  constexpr int G = gate_count(MODE);
  T* slice = reinterpret_cast<T*>(rnn_shared);
  float* sums = reinterpret_cast<float*>(rnn_shared + slice_bytes(G, units, p.out_size, sizeof(T)));
  const int64_t unit0 = blockIdx.x * units, n = std::min<int64_t>(units, p.hidden - unit0), P = p.out_size;
  const T* w_hh = static_cast<const T*>(p.w_hh);
  for (int64_t idx = threadIdx.x; idx < G * n * P; idx += blockDim.x) {
    const int64_t g = idx / (n * P), u = (idx / P) % n, k = idx % P;
    slice[(g * units + u) * P + k] = w_hh[(g * p.hidden + unit0 + u) * P + k];
  }
  __syncthreads();
  const GateRows<T> rows_of{slice, P, true, units, p.hidden, unit0};
  const GateRows<T> none{nullptr, 0, false, units, p.hidden, unit0};
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  int cur = 0;
  for (int64_t v = 0; v < p.steps; ++v) {
    const int64_t offset = p.d_offsets[v], size = p.d_sizes[v];
    recurrent_step<T, MODE>(p, rows_of, none, nullptr, p.h_state[cur], p.h_state[1 - cur], offset, size, unit0, n,
                            sums);
    carry_rows<T, MODE>(p, p.h_state[cur], p.h_state[1 - cur], size, unit0, n);
    grid.sync();
    cur = 1 - cur;
  }
}

// Calls f.template operator()<T, MODE>() for the run-time dtype and mode.
template <typename F>
void dispatch(const StepParams& p, F&& f) {
  auto by_mode = [&](auto type_tag) {
    using T = decltype(type_tag);
    switch (p.mode) {
      case 0: f.template operator()<T, 0>(); break;
      case 1: f.template operator()<T, 1>(); break;
      case 2: f.template operator()<T, 2>(); break;
      default: f.template operator()<T, 3>(); break;
    }
  };
  switch (p.dtype) {
    case Dtype::kFloat: by_mode(float{}); break;
    case Dtype::kHalf: by_mode(__half{}); break;
    default: by_mode(__nv_bfloat16{}); break;
  }
}

}  // namespace

bool launch_persistent_forward(const StepParams& p, cudaStream_t stream) {
  if (p.h_raw != nullptr || p.input != nullptr || p.steps == 0) return false;
  int device = 0, sms = 0, cooperative = 0, smem_optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
  cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (!cooperative || sms == 0) return false;
  bool launched = false;
  dispatch(p, [&]<typename T, int MODE>() {
    auto kernel = persistent_kernel<T, MODE>;
    constexpr int G = gate_count(MODE);
    // Fewest units per block (most blocks, up to about one per SM) whose slice fits and whose
    // grid is co-resident.
    for (int64_t units = std::max<int64_t>(1, (p.hidden + sms - 1) / sms); units <= p.hidden; ++units) {
      const size_t smem = slice_bytes(G, units, p.out_size, sizeof(T)) + step_shared_bytes<T>(MODE, units);
      if (smem > static_cast<size_t>(smem_optin)) return;
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
          cudaSuccess) {
        return;
      }
      int per_sm = 0;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
      const int64_t blocks = (p.hidden + units - 1) / units;
      if (blocks > static_cast<int64_t>(per_sm) * sms) continue;
      StepParams params = p;
      int64_t units_arg = units;
      void* args[] = {&params, &units_arg};
      launched = cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel), dim3(static_cast<unsigned>(blocks)),
                                             dim3(kThreads), args, smem, stream) == cudaSuccess;
      return;
    }
  });
  if (!launched) cudaGetLastError();  // clear a refused launch; the caller falls back
  return launched;
}

void launch_step_forward(const StepParams& p, int64_t visit, int64_t row_offset, int64_t rows, int cur,
                         cudaStream_t stream) {
  (void)visit;
  if (rows == 0) return;
  // 8 units per block: 8 warps each take (row, unit) pairs; enough blocks to fill the GPU from
  // hidden sizes of a few hundred.
  constexpr int64_t units = 8;
  const unsigned blocks = static_cast<unsigned>((p.hidden + units - 1) / units);
  dispatch(p, [&]<typename T, int MODE>() {
    step_kernel<T, MODE><<<blocks, kThreads, step_shared_bytes<T>(MODE, units), stream>>>(p, row_offset, rows, cur, units);
  });
}

}  // namespace bigkern::cuda::rnn
