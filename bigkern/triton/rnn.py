"""Triton recurrent kernels: the fused cell / step forward and the pointwise backward.

Launchers with the schemas' arguments (csrc/schema/rnn.cpp): ``rnn_cell_forward``,
``rnn_cell_backward``, ``rnn_layer_forward``, ``rnn_layer_backward``; registered as the ops
``torch.ops.bigkern_triton.*`` by bigkern/ops/rnn.py.

Forward (``_gates_forward_kernel``): one program owns a tile of BLOCK_B batch rows x BLOCK_H
hidden units and keeps the pre-activations of ALL the gates of those units in registers: it
accumulates ``input @ w_ih^T`` (cells) and ``h @ w_hh^T`` into one accumulator per gate, adds
the step's precomputed input part (layers) and the biases, runs the gate math and stores only
h', c' and the workspace: the gates never go through memory as separate tensors. A layer
launches it once per step (the recurrence needs every unit of h before the next step; Triton
offers no safe grid-wide barrier, so a persistent sequence kernel is left to the CUDA backend).

Backward (``_gates_backward_kernel``): the pointwise gate gradients from the saved workspace,
fused into one kernel per step; the products (``d_gates @ w_hh`` per step, and the weight
gradients once over all steps) are torch matmuls (cuBLAS), as in cuDNN's backward.

The recurrent state between steps is float32 (the accumulation type); each product rounds its
operand to the weights' dtype, as torch's own CUDA LSTM does.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bigkern.reference import rnn as reference
from bigkern.triton.autotune import autotune

LSTM, GRU = reference.LSTM, reference.GRU
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
#: The blocks used under the interpreter (the tests may change them).
INTERPRETER_CONFIG = {"BLOCK_B": 16, "BLOCK_H": 16, "BLOCK_K": 16}
#: The autotuner's candidates on a GPU (batch rows, hidden units, K step, warps, stages).
FORWARD_CONFIGS = [
    triton.Config({"BLOCK_B": b, "BLOCK_H": h, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for b, h, k, w, s in [(16, 32, 64, 4, 3), (16, 64, 64, 4, 3), (32, 32, 64, 4, 3), (64, 32, 32, 4, 3),
                          (64, 64, 32, 8, 3), (16, 16, 128, 2, 3)]
]  # fmt: skip
_UPCAST_DOTS = tl.constexpr(INTERPRETED)  # the interpreter mishandles bfloat16 dot operands


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _gate_weights(W, ldw, gate, H, K, offs_h, offs_k):
    """(BLOCK_K, BLOCK_H) tile of w[gate * H + j, k]^T, zeros outside."""
    ptrs = W + (gate * H + offs_h).to(tl.int64)[None, :] * ldw + offs_k[:, None]
    return tl.load(ptrs, mask=(offs_h < H)[None, :] & (offs_k < K)[:, None], other=0.0)


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    if _UPCAST_DOTS:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)


@triton.jit
def _accumulate(A, lda, W, K, H, offs_b, rows, offs_h, acc0, acc1, acc2, acc3, MODE: tl.constexpr,
                N_SLOT: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """acc_g += A[rows, :K] @ W[g*H + units, :K]^T for each gate g; the GRU's n gate goes to slot N_SLOT."""
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(A + offs_b.to(tl.int64)[:, None] * lda + offs_k[None, :],
                    mask=(offs_b < rows)[:, None] & (offs_k < K)[None, :], other=0.0)
        acc0 = _dot(a, _gate_weights(W, K, 0, H, K, offs_h, offs_k), acc0, PRECISION)
        if MODE == 0:
            acc1 = _dot(a, _gate_weights(W, K, 1, H, K, offs_h, offs_k), acc1, PRECISION)
            acc2 = _dot(a, _gate_weights(W, K, 2, H, K, offs_h, offs_k), acc2, PRECISION)
            acc3 = _dot(a, _gate_weights(W, K, 3, H, K, offs_h, offs_k), acc3, PRECISION)
        if MODE == 1:
            acc1 = _dot(a, _gate_weights(W, K, 1, H, K, offs_h, offs_k), acc1, PRECISION)
            if N_SLOT == 3:
                acc3 = _dot(a, _gate_weights(W, K, 2, H, K, offs_h, offs_k), acc3, PRECISION)
            else:
                acc2 = _dot(a, _gate_weights(W, K, 2, H, K, offs_h, offs_k), acc2, PRECISION)
    return acc0, acc1, acc2, acc3


@triton.jit
def _part(P, row_base, ld, gate, H, offs_b, rows, offs_h):
    """Gate block ``gate`` of rows of a (rows, G*H) matrix as float32, zeros outside."""
    ptrs = P + (row_base + offs_b).to(tl.int64)[:, None] * ld + gate * H + offs_h[None, :]
    return tl.load(ptrs, mask=(offs_b < rows)[:, None] & (offs_h < H)[None, :], other=0.0).to(tl.float32)


@triton.jit
def _add_gates(acc0, acc1, acc2, acc3, Src, row_base, ld, H, offs_b, rows, offs_h, MODE: tl.constexpr,
               N_SLOT: tl.constexpr):
    """acc_g += gate g's block of the (rows, G*H) matrix Src (row stride ld); the GRU's n gate goes
    to slot N_SLOT (3: the input part, 2: the recurrent part h_n)."""
    acc0 += _part(Src, row_base, ld, 0, H, offs_b, rows, offs_h)
    if MODE == 0:
        acc1 += _part(Src, row_base, ld, 1, H, offs_b, rows, offs_h)
        acc2 += _part(Src, row_base, ld, 2, H, offs_b, rows, offs_h)
        acc3 += _part(Src, row_base, ld, 3, H, offs_b, rows, offs_h)
    if MODE == 1:
        acc1 += _part(Src, row_base, ld, 1, H, offs_b, rows, offs_h)
        if N_SLOT == 3:
            acc3 += _part(Src, row_base, ld, 2, H, offs_b, rows, offs_h)
        else:
            acc2 += _part(Src, row_base, ld, 2, H, offs_b, rows, offs_h)
    return acc0, acc1, acc2, acc3


@triton.jit
def _gates_forward_kernel(
    X, W_IH, A, W_HH, XPROJ, B_IH, B_HH,  # inputs (X/W_IH: cells; XPROJ: layers)
    C, OUT, H_NEW, WS,  # C: float32 cell state, updated in place; OUT: h' rows (dtype)
    rows, row_base, I, K, H, ld_out, ld_ws, ld_a,
    MODE: tl.constexpr, HAS_INPUT: tl.constexpr, HAS_XPROJ: tl.constexpr, HAS_BIAS_IH: tl.constexpr,
    HAS_BIAS_HH: tl.constexpr, SAVE_WS: tl.constexpr, PROJECTING: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One step for a (BLOCK_B rows x BLOCK_H units) tile, every gate in registers.

    A: the previous state (rows, K) with row stride ld_a; X (rows, I) for cells; XPROJ's rows
    start at ``row_base`` (layers), as do OUT's and WS's. H_NEW (rows, H) float32: h' before any
    projection, the next step's state. Rows past ``rows`` and units past H are masked."""
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    live = (offs_b < rows)[:, None] & (offs_h < H)[None, :]
    acc0 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc1 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc2 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    acc3 = tl.zeros((BLOCK_B, BLOCK_H), tl.float32)
    if HAS_INPUT:
        acc0, acc1, acc2, acc3 = _accumulate(X, I, W_IH, I, H, offs_b, rows, offs_h, acc0, acc1, acc2, acc3,
                                             MODE, 3, BLOCK_K, PRECISION)
    acc0, acc1, acc2, acc3 = _accumulate(A, ld_a, W_HH, K, H, offs_b, rows, offs_h, acc0, acc1, acc2, acc3,
                                         MODE, 2, BLOCK_K, PRECISION)
    G: tl.constexpr = 4 if MODE == 0 else (3 if MODE == 1 else 1)
    if HAS_XPROJ:
        acc0, acc1, acc2, acc3 = _add_gates(acc0, acc1, acc2, acc3, XPROJ, row_base, G * H, H, offs_b, rows, offs_h, MODE, 3)
    if HAS_BIAS_IH:  # a bias is a matrix of row stride 0
        acc0, acc1, acc2, acc3 = _add_gates(acc0, acc1, acc2, acc3, B_IH, 0, 0, H, offs_b, rows, offs_h, MODE, 3)
    if HAS_BIAS_HH:
        acc0, acc1, acc2, acc3 = _add_gates(acc0, acc1, acc2, acc3, B_HH, 0, 0, H, offs_b, rows, offs_h, MODE, 2)
    ws_ptr = WS + (row_base + offs_b).to(tl.int64)[:, None] * ld_ws + offs_h[None, :]
    state_ptr = offs_b.to(tl.int64)[:, None] * H + offs_h[None, :]
    if MODE == 0:
        i, f, g, o = _sigmoid(acc0), _sigmoid(acc1), _tanh(acc2), _sigmoid(acc3)
        c = tl.load(C + state_ptr, mask=live, other=0.0)
        c = f * c + i * g
        h = o * _tanh(c)
        tl.store(C + state_ptr, c, mask=live)
        if SAVE_WS:
            tl.store(ws_ptr, i, mask=live)
            tl.store(ws_ptr + H, f, mask=live)
            tl.store(ws_ptr + 2 * H, g, mask=live)
            tl.store(ws_ptr + 3 * H, o, mask=live)
            tl.store(ws_ptr + 4 * H, c, mask=live)
            if PROJECTING:
                tl.store(ws_ptr + 5 * H, h, mask=live)
    elif MODE == 1:
        r, z = _sigmoid(acc0), _sigmoid(acc1)
        n = _tanh(acc3 + r * acc2)
        h_prev = tl.load(A + offs_b.to(tl.int64)[:, None] * ld_a + offs_h[None, :], mask=live, other=0.0)
        h = (1.0 - z) * n + z * h_prev.to(tl.float32)
        if SAVE_WS:
            tl.store(ws_ptr, r, mask=live)
            tl.store(ws_ptr + H, z, mask=live)
            tl.store(ws_ptr + 2 * H, n, mask=live)
            tl.store(ws_ptr + 3 * H, acc2, mask=live)
    else:
        h = _tanh(acc0) if MODE == 2 else tl.maximum(acc0, 0.0)
        if SAVE_WS:
            tl.store(ws_ptr, h, mask=live)
    tl.store(H_NEW + state_ptr, h, mask=live)
    if not PROJECTING:
        out_ptr = OUT + (row_base + offs_b).to(tl.int64)[:, None] * ld_out + offs_h[None, :]
        tl.store(out_ptr, h.to(OUT.dtype.element_ty), mask=live)


@triton.jit
def _gates_backward_kernel(
    DH, DC, WS, C_PREV, H_PREV, DX, DREC, DIRECT,
    rows, row_base, H, ld_ws,
    MODE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Pointwise backward of one step for (rows, H): DH (rows, H) the gradient of h' (after the
    projection's backward), DC (rows, H) float32 the gradient of c', replaced by that of c_prev;
    WS rows from ``row_base``; C_PREV / H_PREV (rows, H) float32. Writes DX / DREC rows from
    ``row_base`` ((N, G*H): the gates' input-part and recurrent-part gradients) and DIRECT
    (rows, H): the GRU's direct gradient of h_prev."""
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    live = (offs_b < rows)[:, None] & (offs_h < H)[None, :]
    local = offs_b.to(tl.int64)[:, None] * H + offs_h[None, :]
    ws = WS + (row_base + offs_b).to(tl.int64)[:, None] * ld_ws + offs_h[None, :]
    G: tl.constexpr = 4 if MODE == 0 else (3 if MODE == 1 else 1)
    out = (row_base + offs_b).to(tl.int64)[:, None] * (G * H) + offs_h[None, :]
    dh = tl.load(DH + local, mask=live, other=0.0)
    if MODE == 0:
        i = tl.load(ws, mask=live, other=0.0)
        f = tl.load(ws + H, mask=live, other=0.0)
        g = tl.load(ws + 2 * H, mask=live, other=0.0)
        o = tl.load(ws + 3 * H, mask=live, other=0.0)
        c1 = tl.load(ws + 4 * H, mask=live, other=0.0)
        c_prev = tl.load(C_PREV + local, mask=live, other=0.0)
        tc = _tanh(c1)
        dc = tl.load(DC + local, mask=live, other=0.0) + dh * o * (1.0 - tc * tc)
        d_i = dc * g * i * (1.0 - i)
        d_f = dc * c_prev * f * (1.0 - f)
        d_g = dc * i * (1.0 - g * g)
        d_o = dh * tc * o * (1.0 - o)
        tl.store(DC + local, dc * f, mask=live)
        tl.store(DX + out, d_i.to(DX.dtype.element_ty), mask=live)
        tl.store(DX + out + H, d_f.to(DX.dtype.element_ty), mask=live)
        tl.store(DX + out + 2 * H, d_g.to(DX.dtype.element_ty), mask=live)
        tl.store(DX + out + 3 * H, d_o.to(DX.dtype.element_ty), mask=live)
        tl.store(DREC + out, d_i, mask=live)
        tl.store(DREC + out + H, d_f, mask=live)
        tl.store(DREC + out + 2 * H, d_g, mask=live)
        tl.store(DREC + out + 3 * H, d_o, mask=live)
    elif MODE == 1:
        r = tl.load(ws, mask=live, other=0.0)
        z = tl.load(ws + H, mask=live, other=0.0)
        n = tl.load(ws + 2 * H, mask=live, other=0.0)
        hn = tl.load(ws + 3 * H, mask=live, other=0.0)
        h_prev = tl.load(H_PREV + local, mask=live, other=0.0)
        d_pn = dh * (1.0 - z) * (1.0 - n * n)
        d_pz = dh * (h_prev - n) * z * (1.0 - z)
        d_pr = d_pn * hn * r * (1.0 - r)
        tl.store(DX + out, d_pr.to(DX.dtype.element_ty), mask=live)
        tl.store(DX + out + H, d_pz.to(DX.dtype.element_ty), mask=live)
        tl.store(DX + out + 2 * H, d_pn.to(DX.dtype.element_ty), mask=live)
        tl.store(DREC + out, d_pr, mask=live)
        tl.store(DREC + out + H, d_pz, mask=live)
        tl.store(DREC + out + 2 * H, d_pn * r, mask=live)
        tl.store(DIRECT + local, dh * z, mask=live)
    else:
        h1 = tl.load(ws, mask=live, other=0.0)
        d = dh * (1.0 - h1 * h1) if MODE == 2 else tl.where(h1 > 0.0, dh, 0.0)
        tl.store(DX + out, d.to(DX.dtype.element_ty), mask=live)
        tl.store(DREC + out, d, mask=live)


if INTERPRETED:
    _forward = _gates_forward_kernel
else:
    _forward = autotune(FORWARD_CONFIGS, key=["H", "K", "I", "MODE", "HAS_INPUT"])(_gates_forward_kernel)


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _check(dtype: torch.dtype) -> None:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"bigkern_triton: the recurrent kernels take float32, float16 or bfloat16, got {dtype}")


def _launch_forward(mode, rows, row_base, state, k, hidden, w_hh, c, out, h_new, ws, *, x=None, w_ih=None,
                    x_proj=None, b_ih=None, b_hh=None, projecting=False):
    dummy = h_new
    if rows == 0:
        return
    fixed = dict(INTERPRETER_CONFIG) if INTERPRETED else {}

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_B"]), triton.cdiv(hidden, meta["BLOCK_H"]))

    _forward[grid](
        x if x is not None else dummy, w_ih if w_ih is not None else dummy, state, w_hh,
        x_proj if x_proj is not None else dummy, b_ih if b_ih is not None else dummy,
        b_hh if b_hh is not None else dummy, c if c is not None else dummy, out if out is not None else dummy,
        h_new, ws if ws is not None else dummy,
        rows, row_base, x.shape[1] if x is not None else 0, k, hidden,
        out.shape[1] if out is not None else 0, ws.shape[1] if ws is not None else 0, state.stride(0),
        MODE=mode, HAS_INPUT=x is not None, HAS_XPROJ=x_proj is not None, HAS_BIAS_IH=b_ih is not None,
        HAS_BIAS_HH=b_hh is not None, SAVE_WS=ws is not None, PROJECTING=projecting,
        PRECISION=_precision(w_hh.dtype), **fixed,
    )  # fmt: skip


def _launch_backward(mode, rows, row_base, hidden, dh, dc, ws, c_prev, h_prev, dx, d_rec, direct):
    if rows == 0:
        return
    block_b, block_h = (INTERPRETER_CONFIG["BLOCK_B"], INTERPRETER_CONFIG["BLOCK_H"]) if INTERPRETED else (32, 64)
    grid = (triton.cdiv(rows, block_b), triton.cdiv(hidden, block_h))
    dummy = dh
    _gates_backward_kernel[grid](
        dh, dc if dc is not None else dummy, ws, c_prev if c_prev is not None else dummy,
        h_prev if h_prev is not None else dummy, dx, d_rec, direct if direct is not None else dummy,
        rows, row_base, hidden, ws.shape[1], MODE=mode, BLOCK_B=block_b, BLOCK_H=block_h,
    )  # fmt: skip


def _empty(like, dtype=None):
    return like.new_empty((0,), dtype=dtype or like.dtype)


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def rnn_cell_forward(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, save_workspace):
    _check(input.dtype)
    input, hx, w_ih, w_hh = (t.contiguous() for t in (input, hx, w_ih, w_hh))
    batch, hidden = hx.shape
    c = cx.float().contiguous().clone() if mode == LSTM else None
    hy = input.new_empty((batch, hidden))
    h_new = torch.empty((batch, hidden), dtype=torch.float32, device=input.device)
    ws = torch.empty((batch, reference.workspace_width(mode, hidden)), dtype=torch.float32, device=input.device)
    _launch_forward(mode, batch, 0, hx, hidden, hidden, w_hh, c, hy, h_new, ws if save_workspace else None,
                    x=input, w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)  # fmt: skip
    cy = c.to(input.dtype) if mode == LSTM else _empty(input)
    return hy, cy, ws if save_workspace else _empty(input, torch.float32)


def rnn_cell_backward(mode, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, workspace, has_bias):
    _check(input.dtype)
    batch, hidden = hx.shape
    gates = reference.GATES[mode]
    dtype = input.dtype
    dh = grad_hy.float().contiguous()
    dc = None
    if mode == LSTM:
        dc = grad_cy.float().contiguous().clone() if grad_cy is not None else torch.zeros_like(dh)
    d_x = torch.empty((batch, gates * hidden), dtype=torch.float32, device=input.device)
    d_rec = torch.empty_like(d_x)
    direct = torch.zeros_like(dh) if mode == GRU else None
    c_prev = cx.float().contiguous() if mode == LSTM else None
    h_prev = hx.float().contiguous() if mode == GRU else None
    _launch_backward(mode, batch, 0, hidden, dh, dc, workspace.contiguous(), c_prev, h_prev, d_x, d_rec, direct)
    # The products, in float32 with torch's matmul.
    grad_input = (d_x @ w_ih.float()).to(dtype)
    grad_hx = d_rec @ w_hh.float()
    if direct is not None:
        grad_hx = grad_hx + direct
    grad_w_ih = (d_x.t() @ input.float()).to(dtype)
    grad_w_hh = (d_rec.t() @ hx.float()).to(dtype)
    empty = _empty(input)
    grad_b = (d_x.sum(0).to(dtype), d_rec.sum(0).to(dtype)) if has_bias else (empty, empty)
    return grad_input, grad_hx.to(dtype), dc.to(dtype) if mode == LSTM else empty, grad_w_ih, grad_w_hh, *grad_b


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def _previous_rows(batch_sizes, reverse, batch, rows):
    """For each packed row, the row of the state it started from in cat([initial, rows])."""
    steps = reference.step_rows(batch_sizes, reverse)
    index = torch.empty(rows, dtype=torch.int64)
    previous = None
    for _, off, size in steps:
        for b in range(size):
            live_before = previous is not None and previous[1] > b
            index[off + b] = batch + previous[0] + b if live_before else b
        previous = (off, size)
    return index


def rnn_layer_forward(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, save_workspace):
    _check(hx.dtype)
    gates = reference.GATES[mode]
    hidden = w_hh.shape[0] // gates
    rows, batch, out_size = x_proj.shape[0], hx.shape[0], hx.shape[1]
    device, dtype = hx.device, hx.dtype
    projecting = w_hr is not None
    x_proj, w_hh = x_proj.contiguous(), w_hh.contiguous()
    state = hx.float().contiguous().clone()
    c = cx.float().contiguous().clone() if mode == LSTM else None
    output = torch.empty((rows, out_size), dtype=dtype, device=device)
    width = reference.workspace_width(mode, hidden, projecting)
    ws = torch.empty((rows, width), dtype=torch.float32, device=device) if save_workspace else None
    h_new = torch.empty((batch, hidden), dtype=torch.float32, device=device)
    w_hr_t = w_hr.float().t() if projecting else None
    for _, off, size in reference.step_rows(batch_sizes, reverse):
        _launch_forward(mode, size, off, state, out_size, hidden, w_hh, c, output, h_new, ws, x_proj=x_proj,
                        b_hh=b_hh, projecting=projecting)  # fmt: skip
        if projecting:
            projected = h_new[:size] @ w_hr_t
            output[off : off + size] = projected.to(dtype)
            state[:size] = projected
        else:
            state[:size] = h_new[:size]
    cy = c.to(dtype) if mode == LSTM else _empty(hx)
    return output, state.to(dtype), cy, ws if save_workspace else _empty(hx, torch.float32)


def rnn_layer_backward(mode, grad_output, grad_hy, grad_cy, batch_sizes, hx, cx, w_hh, b_hh, w_hr, output, workspace,
                       reverse):
    _check(hx.dtype)
    gates = reference.GATES[mode]
    hidden = w_hh.shape[0] // gates
    rows, batch, out_size = grad_output.shape[0], hx.shape[0], hx.shape[1]
    device, dtype = hx.device, hx.dtype
    projecting = w_hr is not None
    workspace = workspace.contiguous()
    index = _previous_rows(batch_sizes, reverse, batch, rows).to(device)
    h_prev_rows = torch.cat([hx, output]).float().index_select(0, index)
    c_prev_rows = None
    if mode == LSTM:
        c_prev_rows = torch.cat([cx.float(), workspace[:, 4 * hidden : 5 * hidden]]).index_select(0, index).contiguous()
    dh = grad_hy.float().clone() if grad_hy is not None else torch.zeros((batch, out_size), device=device)
    dc = None
    if mode == LSTM:
        dc = grad_cy.float().contiguous().clone() if grad_cy is not None else torch.zeros((batch, hidden), device=device)
    grad_x = torch.empty((rows, gates * hidden), dtype=dtype, device=device)
    d_rec = torch.empty((rows, gates * hidden), dtype=torch.float32, device=device)
    direct = torch.empty((batch, hidden), dtype=torch.float32, device=device) if mode == GRU else None
    dh_rows = torch.empty((rows, out_size), dtype=torch.float32, device=device) if projecting else None
    w_hh_f = w_hh.float()
    w_hr_f = w_hr.float() if projecting else None
    h_prev_gru = h_prev_rows.contiguous() if mode == GRU else None
    for _, off, size in reversed(reference.step_rows(batch_sizes, reverse)):
        d = grad_output[off : off + size].float() + dh[:size]
        if projecting:
            dh_rows[off : off + size] = d
            d = d @ w_hr_f
        h_prev = h_prev_gru[off : off + size] if h_prev_gru is not None else None
        c_prev = c_prev_rows[off : off + size] if c_prev_rows is not None else None
        _launch_backward(mode, size, off, hidden, d.contiguous(), dc, workspace, c_prev, h_prev, grad_x, d_rec, direct)
        step_grad = d_rec[off : off + size] @ w_hh_f
        if direct is not None:
            step_grad += direct[:size]
        dh[:size] = step_grad
    empty = _empty(hx)
    grad_w_hh = (d_rec.t() @ h_prev_rows).to(dtype)
    grad_b_hh = d_rec.sum(0).to(dtype) if b_hh is not None else empty
    grad_w_hr = (dh_rows.t() @ workspace[:, 5 * hidden :]).to(dtype) if projecting else empty
    cx_grad = dc.to(dtype) if mode == LSTM else empty
    return grad_x, dh.to(dtype), cx_grad, grad_w_hh, grad_b_hh, grad_w_hr
