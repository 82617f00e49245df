"""The recurrent ops in plain PyTorch: the oracle of every test and the "torch" backend.

Same signatures and contract as the C++ schemas (csrc/schema/rnn.cpp): modes, gate order,
the packed time-major layout of the layer ops and the workspace each forward saves. The math
runs in the accumulation type (float32 for float16 / bfloat16 / float32, float64 for float64)
and rounds to the tensors' dtype at the end, as the kernels do. The backward functions derive
the gradients by hand from the workspace, as the kernels must (the backward schemas carry
neither x_proj nor the biases: the saved gates stand for them); tests/ops/test_rnn.py checks
them against autograd through torch.nn.
"""

from __future__ import annotations

import torch

LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3
MODES = {"LSTM": LSTM, "GRU": GRU, "RNN_TANH": RNN_TANH, "RNN_RELU": RNN_RELU}
GATES = {LSTM: 4, GRU: 3, RNN_TANH: 1, RNN_RELU: 1}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def workspace_width(mode: int, hidden: int, projecting: bool = False) -> int:
    """Columns of the workspace one (step, sequence) row saves (csrc/schema/rnn.cpp)."""
    if mode == LSTM:
        return 6 * hidden if projecting else 5 * hidden
    if mode == GRU:
        return 4 * hidden
    return hidden


def _step(mode, x_part, h, c, w_hh, b_hh, w_hr, operand_dtype=None):
    """One step from the input part of the gates (x @ w_ih^T + b_ih); all in acc.

    ``operand_dtype``: round h to it for the recurrent product only, as tensor-core kernels do
    with their A operand (None: no rounding). Returns (h', c' or None, workspace row block)."""
    h_operand = h if operand_dtype is None else h.to(operand_dtype).to(h.dtype)
    h_part = h_operand @ w_hh.t()
    if b_hh is not None:
        h_part = h_part + b_hh
    if mode == LSTM:
        xi, xf, xg, xo = (x_part + h_part).chunk(4, dim=1)
        i, f, g, o = xi.sigmoid(), xf.sigmoid(), xg.tanh(), xo.sigmoid()
        c1 = f * c + i * g
        h_raw = o * c1.tanh()
        h1 = h_raw @ w_hr.t() if w_hr is not None else h_raw
        parts = [i, f, g, o, c1] + ([h_raw] if w_hr is not None else [])
        return h1, c1, torch.cat(parts, dim=1)
    if mode == GRU:
        xr, xz, xn = x_part.chunk(3, dim=1)
        hr, hz, hn = h_part.chunk(3, dim=1)
        r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
        n = (xn + r * hn).tanh()
        h1 = (1 - z) * n + z * h
        return h1, None, torch.cat([r, z, n, hn], dim=1)
    pre = x_part + h_part
    h1 = pre.tanh() if mode == RNN_TANH else pre.relu()
    return h1, None, h1


def _empty(like: torch.Tensor, dtype=None) -> torch.Tensor:
    return like.new_empty((0,), dtype=dtype or like.dtype)


def _up(t, acc):
    return None if t is None else t.to(acc)


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def rnn_cell_forward(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, save_workspace):
    acc = acc_dtype(input.dtype)
    x_part = input.to(acc) @ w_ih.to(acc).t()
    if b_ih is not None:
        x_part = x_part + b_ih.to(acc)
    h1, c1, ws = _step(mode, x_part, hx.to(acc), _up(cx, acc), w_hh.to(acc), _up(b_hh, acc), None)
    cy = c1.to(input.dtype) if mode == LSTM else _empty(input)
    return h1.to(input.dtype), cy, ws.contiguous() if save_workspace else _empty(input, acc)


def rnn_cell_backward(mode, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, workspace, has_bias):
    """The gate gradients by hand from the workspace (the biases are not arguments: the saved gates
    already hold their effect), then the products."""
    dtype = input.dtype
    acc = acc_dtype(dtype)
    dh = grad_hy.to(acc)
    dc = (grad_cy.to(acc) if grad_cy is not None else torch.zeros_like(dh)) if mode == LSTM else None
    c_prev = cx.to(acc) if mode == LSTM else None
    d_x, d_rec, direct, dc_prev, _ = _step_backward(mode, dh, dc, workspace.to(acc), hx.to(acc), c_prev, w_hh.to(acc), None)
    grad_hx = d_rec @ w_hh.to(acc) + (direct if direct is not None else 0)
    empty = _empty(input)
    return (
        (d_x @ w_ih.to(acc)).to(dtype),
        grad_hx.to(dtype),
        dc_prev.to(dtype) if mode == LSTM else empty,
        (d_x.t() @ input.to(acc)).to(dtype),
        (d_rec.t() @ hx.to(acc)).to(dtype),
        d_x.sum(0).to(dtype) if has_bias else empty,
        d_rec.sum(0).to(dtype) if has_bias else empty,
    )


# ---------------------------------------------------------------------------------------------
# One direction of one layer over a packed, time-major sequence
# ---------------------------------------------------------------------------------------------


def step_rows(batch_sizes: torch.Tensor, reverse: bool):
    """(t, row offset, active batch) in the order the layer visits the steps."""
    sizes = [int(s) for s in batch_sizes.tolist()]
    offsets, total = [], 0
    for s in sizes:
        offsets.append(total)
        total += s
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    return [(t, offsets[t], sizes[t]) for t in order]


def _layer(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, operand_dtype=None):
    """The layer in acc with autograd-friendly ops: (output rows, h, c, workspace rows)."""
    acc = x_proj.dtype
    n = x_proj.shape[0]
    h, c = hx, cx
    out_rows, ws_rows, row_ids = [], [], []
    for _, off, size in step_rows(batch_sizes, reverse):
        h_act, c_act = h[:size], (c[:size] if c is not None else None)
        h1, c1, ws = _step(mode, x_proj[off : off + size], h_act, c_act, w_hh, b_hh, w_hr, operand_dtype)
        out_rows.append(h1)
        ws_rows.append(ws)
        row_ids.append(torch.arange(off, off + size))
        h = torch.cat([h1, h[size:]]) if size < h.shape[0] else h1
        if c is not None:
            c = torch.cat([c1, c[size:]]) if size < c.shape[0] else c1
    if not out_rows:
        return x_proj.new_empty((0, hx.shape[1])), h, c, None
    order = torch.cat(row_ids).argsort()
    output = torch.cat(out_rows)[order]
    workspace = torch.cat(ws_rows)[order]
    assert output.shape[0] == n
    return output.to(acc), h, c, workspace


def _check_batch_sizes(batch_sizes, n, batch):
    sizes = batch_sizes.tolist()
    assert sum(sizes) == n and all(1 <= s <= batch for s in sizes), (sizes, n, batch)
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), sizes


def rnn_layer_forward(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, save_workspace, *,
                      operand_dtype=None):
    """``operand_dtype``: see _step (the CUDA tests model the tensor-core path with it)."""
    dtype = hx.dtype
    acc = acc_dtype(dtype)
    _check_batch_sizes(batch_sizes, x_proj.shape[0], hx.shape[0])
    output, h, c, ws = _layer(
        mode, x_proj.to(acc), batch_sizes, hx.to(acc), _up(cx, acc), w_hh.to(acc), _up(b_hh, acc), _up(w_hr, acc), reverse,
        operand_dtype,
    )
    hidden = w_hh.shape[0] // GATES[mode]
    if not save_workspace:
        workspace = _empty(hx, acc)
    elif ws is None:
        workspace = x_proj.new_empty((0, workspace_width(mode, hidden, w_hr is not None)), dtype=acc)
    else:
        workspace = ws.contiguous()
    cy = c.to(dtype) if mode == LSTM else _empty(hx)
    return output.to(dtype), h.to(dtype), cy, workspace


def _step_backward(mode, dh, dc, ws, h_prev, c_prev, w_hh, w_hr):
    """Back through one step from its workspace rows; all in acc.

    Returns (grad of the gates' input part, grad of the gates' recurrent part, dh_prev without
    the recurrent product, dc_prev, dW_hr contribution)."""
    hidden = w_hh.shape[0] // GATES[mode]
    if mode == LSTM:
        i, f, g, o, c1 = (ws[:, k * hidden : (k + 1) * hidden] for k in range(5))
        d_wr = None
        if w_hr is not None:
            d_wr = dh.t() @ ws[:, 5 * hidden :]
            dh = dh @ w_hr
        tc = c1.tanh()
        d_o = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        d_i, d_g, d_f = dc * g, dc * i, dc * c_prev
        gates = torch.cat([d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g * g), d_o * o * (1 - o)], dim=1)
        return gates, gates, None, dc * f, d_wr
    if mode == GRU:
        r, z, n, hn = (ws[:, k * hidden : (k + 1) * hidden] for k in range(4))
        d_pn = dh * (1 - z) * (1 - n * n)
        d_pz = dh * (h_prev - n) * z * (1 - z)
        d_pr = d_pn * hn * r * (1 - r)
        return torch.cat([d_pr, d_pz, d_pn], 1), torch.cat([d_pr, d_pz, d_pn * r], 1), dh * z, None, None
    h1 = ws
    d_pre = dh * (1 - h1 * h1) if mode == RNN_TANH else dh * (h1 > 0).to(dh.dtype)
    return d_pre, d_pre, None, None, None


def rnn_layer_backward(mode, grad_output, grad_hy, grad_cy, batch_sizes, hx, cx, w_hh, b_hh, w_hr, output, workspace,
                       reverse):
    """Back-propagation through time by hand from the saved workspace (the torch backend's
    backward; tests check it, and the kernels, against autograd through torch.nn)."""
    dtype = hx.dtype
    acc = acc_dtype(dtype)
    hidden = w_hh.shape[0] // GATES[mode]
    n = grad_output.shape[0]
    wh = w_hh.to(acc)
    wr = _up(w_hr, acc)
    steps = step_rows(batch_sizes, reverse)
    # Replay the visiting order to find each step's previous state rows.
    h, c = hx.to(acc).clone(), (cx.to(acc).clone() if mode == LSTM else None)
    prev = []
    for _, off, size in steps:
        prev.append((h[:size].clone(), c[:size].clone() if c is not None else None))
        h[:size] = output[off : off + size].to(acc)
        if c is not None:
            c[:size] = workspace[off : off + size, 4 * hidden : 5 * hidden]
    dh = grad_hy.to(acc).clone() if grad_hy is not None else torch.zeros_like(h)
    dc = None
    if mode == LSTM:
        dc = grad_cy.to(acc).clone() if grad_cy is not None else torch.zeros_like(c)
    g_x = torch.zeros((n, w_hh.shape[0]), dtype=acc, device=hx.device)
    g_wh = torch.zeros_like(wh)
    g_bh = torch.zeros(w_hh.shape[0], dtype=acc, device=hx.device)
    g_wr = torch.zeros_like(wr) if wr is not None else None
    for (_, off, size), (h_prev, c_prev) in zip(reversed(steps), reversed(prev)):
        d_h = grad_output[off : off + size].to(acc) + dh[:size]
        d_c = dc[:size] if dc is not None else None
        d_x, d_rec, d_direct, d_cprev, d_wr = _step_backward(
            mode, d_h, d_c, workspace[off : off + size], h_prev, c_prev, wh, wr
        )
        g_x[off : off + size] = d_x
        g_wh += d_rec.t() @ h_prev
        g_bh += d_rec.sum(0)
        if d_wr is not None:
            g_wr += d_wr
        d_hprev = d_rec @ wh
        dh[:size] = d_hprev + d_direct if d_direct is not None else d_hprev
        if dc is not None:
            dc[:size] = d_cprev
    empty = _empty(hx)
    return (
        g_x.to(dtype),
        dh.to(dtype),
        dc.to(dtype) if dc is not None else empty,
        g_wh.to(dtype),
        g_bh.to(dtype) if b_hh is not None else empty,
        g_wr.to(dtype) if g_wr is not None else empty,
    )
