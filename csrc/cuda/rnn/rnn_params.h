// Parameters of the CUDA recurrent kernels: plain structs the host code (rnn.cpp, compiled by the
// C++ compiler) fills and the launchers (forward.cu, backward.cu) read.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace bigkern::cuda::rnn {

enum class Dtype : int { kFloat = 0, kHalf = 1, kBFloat16 = 2 };

// One direction of one layer (or one cell step: steps = 1, input/w_ih set, x_proj null).
// Weights and x_proj/input/output are in `dtype`; states and the workspace are float32.
struct StepParams {
  int mode;  // 0 LSTM, 1 GRU, 2 RNN tanh, 3 RNN relu
  Dtype dtype;
  int64_t batch, hidden, out_size, input_size, steps;
  // Visiting order: visit v covers packed rows [offsets[v], offsets[v] + sizes[v]); device arrays
  // (the persistent kernel reads them) mirrored by host arrays (the per-step path).
  const int64_t* d_offsets;
  const int64_t* d_sizes;
  const void* x_proj;  // (N, G*H) layers
  const void* input;   // (B, I) cells
  const void* w_ih;    // (G*H, I) cells
  const void* w_hh;    // (G*H, P)
  const void* b_ih;    // cells, or null
  const void* b_hh;    // or null
  float* h_state[2];   // (B, P) each: read one, write the other, swap per step
  float* c_state;      // (B, H) LSTM, updated in place by the unit's owner
  void* output;        // (N, P) rows of h' (null when projecting: the host projects)
  float* h_raw;        // (B, H) o * tanh(c') before the projection (projecting only)
  float* workspace;    // (N, ws_width) or null
  int64_t ws_width;
};

// Launches the persistent whole-sequence kernel if the recurrent weights fit in the shared memory
// of a co-resident grid; returns false (launching nothing) otherwise.
bool launch_persistent_forward(const StepParams& p, cudaStream_t stream);
// One step (visit `visit`: rows [row_offset, row_offset + rows)), reading h_state[cur], writing
// h_state[1 - cur] (or h_raw when projecting). Cells: steps = 1, visit 0, offset 0.
void launch_step_forward(const StepParams& p, int64_t visit, int64_t row_offset, int64_t rows, int cur,
                         cudaStream_t stream);

// Pointwise backward of one step (see backward.cu).
struct BackwardParams {
  int mode;
  Dtype dtype;
  int64_t rows, hidden, ws_width, row_offset;
  const float* dh;       // (rows, H)
  float* dc;             // (rows, H) LSTM: the gradient of c', replaced by that of c_prev
  const float* ws;       // workspace rows from row_offset
  const float* c_prev;   // (rows, H) LSTM
  const float* h_prev;   // (rows, H) GRU
  void* grad_x;          // (N, G*H) dtype, rows from row_offset
  float* d_rec;          // (N, G*H) float32, rows from row_offset
  float* direct;         // (rows, H) GRU
};
void launch_gates_backward(const BackwardParams& p, cudaStream_t stream);

}  // namespace bigkern::cuda::rnn
