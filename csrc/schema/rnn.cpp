// Schemas of the recurrent ops (LSTM, GRU, plain RNN); the contract every kernel (CPU, CUDA,
// Triton) keeps. bigkern/reference/rnn.py is the same contract written in plain PyTorch.
//
// mode (cuDNN's numbering): 0 LSTM, 1 GRU, 2 RNN with tanh, 3 RNN with relu. G, the number of
// gates, is 4, 3, 1, 1. Weights and biases are torch.nn's, gate blocks stacked in torch's order:
//   LSTM (i, f, g, o):  i = sigmoid(x_i + h_i), f = sigmoid(x_f + h_f), g = tanh(x_g + h_g),
//                       o = sigmoid(x_o + h_o); c' = f * c + i * g; h' = o * tanh(c')
//                       (h' = w_hr @ (o * tanh(c')) when a projection w_hr is given)
//   GRU (r, z, n):      r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z),
//                       n = tanh(x_n + r * h_n); h' = (1 - z) * n + z * h
//   RNN:                h' = act(x + h)
// where x_* = w_ih[block] @ x + b_ih[block] and h_* = w_hh[block] @ h + b_hh[block]. Every
// sum and product is accumulated in "acc", the accumulation type: float32 for float16,
// bfloat16 and float32 tensors, float64 for float64.
//
// The workspace a forward saves for its backward, one row per (step, batch) row, type acc:
//   LSTM  [i, f, g, o, c']   (activated gates and the new cell, 5H), plus [o * tanh(c')] (H)
//                            when projecting (the layer op only): 5H or 6H columns
//   GRU   [r, z, n, h_n]     (h_n = w_hn @ h + b_hn, before the reset gate), 4H
//   RNN   [h']               (the new state before rounding to the tensors' dtype), H
// save_workspace=false returns an empty (0,) workspace (inference).
//
// rnn_cell_forward(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, save_workspace)
//     -> (hy, cy, workspace)
//   One step of a cell, both gate products and the gate math fused. input (B, I), hx (B, H),
//   cx (B, H) for LSTM and None otherwise, w_ih (G*H, I), w_hh (G*H, H), b_ih / b_hh (G*H,)
//   both given or both None. Any strides. hy (B, H), cy (B, H) for LSTM else (0,); contiguous,
//   input.dtype. workspace (B, 5H | 4H | H) contiguous acc, or (0,).
//
// rnn_cell_backward(mode, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, workspace, has_bias)
//     -> (grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
//   grad_cy None means zero. Gradients are contiguous, shaped and typed like what they are the
//   gradient of; grad_cx is (0,) unless LSTM; grad_b_* are (0,) when has_bias is false. For the
//   GRU grad_b_hh differs from grad_b_ih in the n block (it is scaled by r); otherwise equal.
//
// rnn_layer_forward(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, save_workspace)
//     -> (output, hy, cy, workspace)
//   One direction of one layer over the whole sequence, in PackedSequence's layout (a padded
//   batch is the case of equal lengths):
//   x_proj (N, G*H) = input @ w_ih^T + b_ih for every step, time-major: step t's rows are
//     [off_t, off_t + batch_sizes[t]), off_t = batch_sizes[0] + ... + batch_sizes[t-1]; row
//     off_t + b belongs to sequence b. Contiguous, dtype of hx.
//   batch_sizes (T,) int64 on the CPU, whatever the device of the others: non-increasing,
//     1 <= batch_sizes[t] <= B and batch_sizes[0] == B, summing to N. T == 0 is allowed.
//   hx (B, P), P = w_hr's rows when projecting else H; cx (B, H) for LSTM else None.
//   w_hh (G*H, P); b_hh (G*H,) or None; w_hr (P, H) or None (LSTM only).
//   reverse=false runs t = 0 .. T-1, true runs t = T-1 .. 0; either way sequence b takes part
//     only in the steps with batch_sizes[t] > b, starting from hx[b] (cx[b]), and no work or
//     output is spent on the others (their state simply carries).
//   output (N, P): h' of every (step, sequence) row. hy (B, P) / cy (B, H) (else (0,)): each
//   sequence's state after its last step. workspace (N, 5H | 6H | 4H | H) acc, or (0,).
//
// rnn_layer_backward(mode, grad_output, grad_hy, grad_cy, batch_sizes, hx, cx, w_hh, b_hh, w_hr,
//                    output, workspace, reverse)
//     -> (grad_x_proj, grad_hx, grad_cx, grad_w_hh, grad_b_hh, grad_w_hr)
//   Back through time from the saved workspace (gates are not recomputed). grad_hy / grad_cy
//   None mean zero. grad_x_proj (N, G*H) dtype of hx: the gradient of the pre-activation gates'
//   input part (the caller turns it into grad_input and grad_w_ih / grad_b_ih with GEMMs).
//   grad_hx (B, P), grad_cx (B, H) or (0,), grad_w_hh (G*H, P), grad_b_hh (G*H,) or (0,) when
//   b_hh is None, grad_w_hr (P, H) or (0,) when w_hr is None. All contiguous.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "schema/schemas.h"

namespace bigkern {

void define_rnn_ops(torch::Library& m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def(
      "rnn_cell_forward(int mode, Tensor input, Tensor hx, Tensor? cx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool save_workspace) -> (Tensor hy, Tensor cy, Tensor workspace)",
      tags);
  m.def(
      "rnn_cell_backward(int mode, Tensor grad_hy, Tensor? grad_cy, Tensor input, Tensor hx, Tensor? cx, "
      "Tensor w_ih, Tensor w_hh, Tensor workspace, bool has_bias) -> (Tensor grad_input, Tensor grad_hx, "
      "Tensor grad_cx, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)",
      tags);
  m.def(
      "rnn_layer_forward(int mode, Tensor x_proj, Tensor batch_sizes, Tensor hx, Tensor? cx, Tensor w_hh, "
      "Tensor? b_hh, Tensor? w_hr, bool reverse, bool save_workspace) "
      "-> (Tensor output, Tensor hy, Tensor cy, Tensor workspace)",
      tags);
  m.def(
      "rnn_layer_backward(int mode, Tensor grad_output, Tensor? grad_hy, Tensor? grad_cy, Tensor batch_sizes, "
      "Tensor hx, Tensor? cx, Tensor w_hh, Tensor? b_hh, Tensor? w_hr, Tensor output, Tensor workspace, "
      "bool reverse) -> (Tensor grad_x_proj, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_hh, "
      "Tensor grad_b_hh, Tensor grad_w_hr)",
      tags);
}

}  // namespace bigkern
