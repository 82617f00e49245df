// The one ldmatrix addressing the backward needs beyond fragment_layout.h: the A operand of a
// 16x16 block read from a tile stored transposed. Pure index math, host and device, checked on
// the CPU by tests/cuda_host/attention_backward/check_backward_fragments.cpp.
//
// The backward keeps P and dS in shared memory with query rows (P[query][key]), but dV += P^T dO
// and dK += dS^T Q need them as the A operand with key rows: A[m][k] = P[k][m], m = key,
// k = query. ldmatrix .trans hands a lane elements (row 2*quad + half, col group) of each 8x8
// matrix it reads (fragment_layout.h); with the stored row being k and the stored col being m,
// that is A[m = group][k = 2*quad + half]: exactly the lane's share of an A register. So
// register r must read the stored 8x8 block holding A's rows/cols of a_r:
//   r = 0: m 0-7,  k 0-7   -> stored rows (k) 0-7,  cols (m) 0-7
//   r = 1: m 8-15, k 0-7   -> stored rows 0-7,     cols 8-15
//   r = 2: m 0-7,  k 8-15  -> stored rows 8-15,    cols 0-7
//   r = 3: m 8-15, k 8-15  -> stored rows 8-15,    cols 8-15
// and lanes 8r..8r+7 give the addresses of its rows 0..7.
#pragma once

#include "cuda/attention/fragment_layout.h"

namespace bigkern::cuda_attention {

// (stored row, first stored col) of the 16-byte row a lane points at, relative to the block's
// top-left corner in storage (k0, m0).
BIGKERN_FRAGMENT_FN RowCol ldsm_a_trans_address(int lane) {
  return {(lane & 7) + (lane >> 4) * 8, ((lane >> 3) & 1) * 8};
}

}  // namespace bigkern::cuda_attention
