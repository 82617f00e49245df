// The CPU recurrent kernels as a table of functions, one table per instruction set
// (rnn_kernels_avx2.cpp, rnn_kernels_baseline.cpp). rnn.cpp validates the arguments, allocates,
// describes the problem with the plain structs below, picks the table once at run time, and
// does the large GEMMs of the backward with ATen.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace bigkern::cpu {

// Sizes and pointers shared by the cell and layer kernels (csrc/schema/rnn.cpp: the contract).
// Every tensor is contiguous; `dtype` is the tensors' type, the workspace and scratch buffers
// are in the accumulation type (float, or double for float64).
struct RnnProblem {
  c10::ScalarType dtype;
  int64_t mode;         // 0 LSTM, 1 GRU, 2 RNN tanh, 3 RNN relu
  int64_t batch;        // B
  int64_t hidden;       // H
  int64_t out_size;     // P: H, or the projection size
  int64_t input_size;   // I (cells only)
  int64_t steps;        // T (layers; 1 for cells)
  const int64_t* batch_sizes = nullptr;  // T entries (layers; null for cells: all B rows)
  bool reverse = false;
  const void* x_proj = nullptr;  // (N, G*H) layers
  const void* input = nullptr;   // (B, I) cells
  const void* hx = nullptr;      // (B, P)
  const void* cx = nullptr;      // (B, H) LSTM
  const void* w_ih = nullptr;    // (G*H, I) cells
  const void* w_hh = nullptr;    // (G*H, P)
  const void* b_ih = nullptr;    // (G*H,) cells, or null
  const void* b_hh = nullptr;    // (G*H,) or null
  const void* w_hr = nullptr;    // (P, H) or null
};

struct RnnForwardOut {
  void* output;     // layers: (N, P); cells: hy (B, H)
  void* hy;         // (B, P) layers; null for cells
  void* cy;         // (B, H) LSTM, else null
  void* workspace;  // (rows, W) acc, or null (inference)
};

struct RnnBackwardIn {
  const void* grad_output;  // layers: (N, P); cells: grad_hy (B, H)
  const void* grad_hy;      // layers: (B, P) or null
  const void* grad_cy;      // (B, H) or null
  const void* output;       // layers: (N, P) the forward's output
  const void* workspace;    // (rows, W) acc
};

struct RnnBackwardOut {
  void* grad_x;      // (rows, G*H) dtype: gradient of the gates' input part
  void* d_rec;       // (rows, G*H) acc: gradient of the gates' recurrent part (w_hh's side)
  void* grad_hx;     // layers: (B, P) dtype; cells: (B, H) acc, the state's direct part (GRU)
  void* grad_cx;     // (B, H) dtype, LSTM; else null
  void* dh_rows;     // layers with projection: (N, P) acc, the gradient of each output row
};

struct RnnKernelTable {
  void (*layer_forward)(const RnnProblem& p, const RnnForwardOut& out);
  void (*layer_backward)(const RnnProblem& p, const RnnBackwardIn& in, const RnnBackwardOut& out);
  void (*cell_forward)(const RnnProblem& p, const RnnForwardOut& out);
  // The pointwise part only: gate gradients from the workspace; rnn.cpp does the products.
  void (*cell_backward)(const RnnProblem& p, const RnnBackwardIn& in, const RnnBackwardOut& out);
};

namespace baseline {
const RnnKernelTable& rnn_kernels();
}
namespace avx2 {
const RnnKernelTable& rnn_kernels();
}

}  // namespace bigkern::cpu
