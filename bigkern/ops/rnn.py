"""Recurrent ops: ``bigkern.ops.lstm_cell / gru_cell / rnn_cell`` (one step) and
``bigkern.ops.lstm / gru / rnn`` (whole sequence, all layers), with torch.nn's semantics.

A whole-sequence call is, per layer and direction, one GEMM for the input projection of every
step (``x_proj = input @ w_ih^T + b_ih``, torch's matmul: one large, efficient product) and one
call of the layer op ``rnn_layer_forward``, whose kernels run the recurrence (csrc/schema/rnn.cpp
states the contract). Sequences travel in PackedSequence's time-major packed layout, so a
padded batch and a PackedSequence with unequal lengths take the same kernels, and padding
costs no work.

The module also registers, for both op namespaces, the fake kernels and the autograd formulas
of the four ops (backward through time reads the workspace the forward saved).
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from bigkern import _library, backend
from bigkern.reference import rnn as reference
from bigkern.reference.rnn import GATES, GRU, LSTM, RNN_RELU, RNN_TANH

_OP_NAMES = ("rnn_cell_forward", "rnn_cell_backward", "rnn_layer_forward", "rnn_layer_backward")
_NONLINEARITIES = {"tanh": RNN_TANH, "relu": RNN_RELU}

# ---------------------------------------------------------------------------------------------
# Fake kernels and autograd, registered for bigkern:: and bigkern_triton::
# ---------------------------------------------------------------------------------------------


def _acc(dtype: torch.dtype) -> torch.dtype:
    return reference.acc_dtype(dtype)


def _register(ns: str) -> None:
    ops = getattr(torch.ops, ns)

    def fake_cell_forward(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, save_workspace):
        batch, hidden = hx.shape
        cy = input.new_empty((batch, hidden) if mode == LSTM else (0,))
        width = reference.workspace_width(mode, hidden)
        ws = input.new_empty((batch, width) if save_workspace else (0,), dtype=_acc(input.dtype))
        return input.new_empty((batch, hidden)), cy, ws

    def fake_cell_backward(mode, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, workspace, has_bias):
        empty = input.new_empty((0,))
        return (
            input.new_empty(input.shape), hx.new_empty(hx.shape),
            hx.new_empty(hx.shape) if mode == LSTM else empty,
            w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape),
            w_ih.new_empty((w_ih.shape[0],)) if has_bias else empty,
            w_ih.new_empty((w_ih.shape[0],)) if has_bias else empty,
        )  # fmt: skip

    def fake_layer_forward(mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, save_workspace):
        rows = x_proj.shape[0]
        hidden = w_hh.shape[0] // GATES[mode]
        width = reference.workspace_width(mode, hidden, w_hr is not None)
        cy = hx.new_empty((hx.shape[0], hidden) if mode == LSTM else (0,))
        ws = hx.new_empty((rows, width) if save_workspace else (0,), dtype=_acc(hx.dtype))
        return hx.new_empty((rows, hx.shape[1])), hx.new_empty(hx.shape), cy, ws

    def fake_layer_backward(mode, grad_output, grad_hy, grad_cy, batch_sizes, hx, cx, w_hh, b_hh, w_hr, output,
                            workspace, reverse):
        empty = hx.new_empty((0,))
        hidden = w_hh.shape[0] // GATES[mode]
        return (
            hx.new_empty((grad_output.shape[0], w_hh.shape[0])), hx.new_empty(hx.shape),
            hx.new_empty((hx.shape[0], hidden)) if mode == LSTM else empty,
            hx.new_empty(w_hh.shape), hx.new_empty(w_hh.shape[:1]) if b_hh is not None else empty,
            hx.new_empty(w_hr.shape) if w_hr is not None else empty,
        )  # fmt: skip

    def setup_cell(ctx, inputs, output):
        mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, _ = inputs
        ctx.mode, ctx.has_bias, ctx.has_cx = mode, b_ih is not None, cx is not None
        ctx.mark_non_differentiable(output[2])
        ctx.save_for_backward(input, hx, cx, w_ih, w_hh, output[2])

    def backward_cell(ctx, grad_hy, grad_cy, _grad_ws):
        input, hx, cx, w_ih, w_hh, workspace = ctx.saved_tensors
        _require_workspace(workspace)
        g_in, g_hx, g_cx, g_wih, g_whh, g_bih, g_bhh = ops.rnn_cell_backward(
            ctx.mode, grad_hy.contiguous(), grad_cy.contiguous() if ctx.mode == LSTM else None, input, hx, cx,
            w_ih, w_hh, workspace, ctx.has_bias,
        )
        bias = (g_bih, g_bhh) if ctx.has_bias else (None, None)
        return None, g_in, g_hx, g_cx if ctx.has_cx else None, g_wih, g_whh, *bias, None

    def setup_layer(ctx, inputs, output):
        mode, x_proj, batch_sizes, hx, cx, w_hh, b_hh, w_hr, reverse, _ = inputs
        ctx.mode, ctx.reverse = mode, reverse
        ctx.has = (cx is not None, b_hh is not None, w_hr is not None)
        ctx.mark_non_differentiable(output[3])
        ctx.save_for_backward(batch_sizes, hx, cx, w_hh, b_hh, w_hr, output[0], output[3])

    def backward_layer(ctx, grad_output, grad_hy, grad_cy, _grad_ws):
        batch_sizes, hx, cx, w_hh, b_hh, w_hr, output, workspace = ctx.saved_tensors
        _require_workspace(workspace)
        g_x, g_hx, g_cx, g_whh, g_bhh, g_whr = ops.rnn_layer_backward(
            ctx.mode, grad_output.contiguous(), grad_hy.contiguous(),
            grad_cy.contiguous() if ctx.mode == LSTM else None, batch_sizes, hx, cx, w_hh, b_hh, w_hr, output,
            workspace, ctx.reverse,
        )  # fmt: skip
        has_cx, has_bias, has_proj = ctx.has
        return (None, g_x, None, g_hx, g_cx if has_cx else None, g_whh, g_bhh if has_bias else None,
                g_whr if has_proj else None, None, None)  # fmt: skip

    torch.library.register_fake(f"{ns}::rnn_cell_forward", fake_cell_forward)
    torch.library.register_fake(f"{ns}::rnn_cell_backward", fake_cell_backward)
    torch.library.register_fake(f"{ns}::rnn_layer_forward", fake_layer_forward)
    torch.library.register_fake(f"{ns}::rnn_layer_backward", fake_layer_backward)
    torch.library.register_autograd(f"{ns}::rnn_cell_forward", backward_cell, setup_context=setup_cell)
    torch.library.register_autograd(f"{ns}::rnn_layer_forward", backward_layer, setup_context=setup_layer)


def _require_workspace(workspace: torch.Tensor) -> None:
    if workspace.dim() != 2:
        raise RuntimeError(
            "bigkern: backward through a recurrent op whose forward ran with save_workspace=False; "
            "call the forward with save_workspace=True (bigkern.ops does when gradients are needed)"
        )


for _name in _OP_NAMES:
    _library.define_triton_twin(_name, _library.lazy_triton_kernel("rnn", _name))
for _ns in (_library.NATIVE_NAMESPACE, _library.TRITON_NAMESPACE):
    _register(_ns)


# ---------------------------------------------------------------------------------------------
# Validation and backend choice
# ---------------------------------------------------------------------------------------------

_SUPPORTED = {
    "cpu": (torch.float32, torch.bfloat16, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}


def _limits(dtype: torch.dtype):
    def limits(name: str) -> str | None:
        if dtype not in _SUPPORTED[name]:
            allowed = ", ".join(str(d).replace("torch.", "") for d in _SUPPORTED[name])
            return f"the {name} recurrent kernels take {allowed}; got {dtype}"
        return None

    return limits


def _check_float(op: str, name: str, t, device=None, dtype=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"bigkern.ops.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"bigkern.ops.{op}: {name} has dtype {t.dtype}; expected float32, float16, bfloat16 or float64")
    if dtype is not None and t.dtype != dtype and not torch.is_autocast_enabled(t.device.type):  # autocast casts them all
        raise TypeError(f"bigkern.ops.{op}: {name} has dtype {t.dtype} but the input is {dtype}; they must match")
    if device is not None and t.device != device:
        raise ValueError(f"bigkern.ops.{op}: {name} is on {t.device} but the input is on {device}; they must match")


def _check_shape(op: str, name: str, t: torch.Tensor, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"bigkern.ops.{op}: {name} has shape {tuple(t.shape)}; expected {tuple(expected)}")


def _autocast(tensors):
    """torch.autocast: the recurrent ops run in the autocast dtype, as torch's do on CUDA."""
    first = tensors[0]
    if torch.is_autocast_enabled(first.device.type):
        dtype = torch.get_autocast_dtype(first.device.type)
        return [None if t is None else t.to(dtype) for t in tensors]
    return list(tensors)


def _ops(chosen: str):
    return torch.ops.bigkern_triton if chosen == "triton" else torch.ops.bigkern


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def _cell(op, mode, input, h, c, w_ih, w_hh, b_ih, b_hh):
    _check_float(op, "input", input)
    if input.dim() not in (1, 2):
        raise ValueError(f"bigkern.ops.{op}: input must be 1-D (unbatched) or 2-D (batch, input_size), got "
                         f"{input.dim()}-D of shape {tuple(input.shape)}")  # fmt: skip
    for name, w, rank in (("w_ih", w_ih, 2), ("w_hh", w_hh, 2)):
        _check_float(op, name, w, input.device, input.dtype)
        if w.dim() != rank:
            raise ValueError(f"bigkern.ops.{op}: {name} must be 2-D, got shape {tuple(w.shape)}")
    gates = GATES[mode]
    if w_hh.shape[0] % gates or w_hh.shape[0] == 0:
        raise ValueError(f"bigkern.ops.{op}: w_hh has {w_hh.shape[0]} rows; expected {gates} x hidden_size")
    hidden = w_hh.shape[0] // gates
    _check_shape(op, "w_hh", w_hh, (gates * hidden, hidden))
    _check_shape(op, "w_ih", w_ih, (gates * hidden, input.shape[-1]))
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"bigkern.ops.{op}: pass both b_ih and b_hh or neither")
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            _check_float(op, name, b, input.device, input.dtype)
            _check_shape(op, name, b, (gates * hidden,))
    unbatched = input.dim() == 1
    batch = 1 if unbatched else input.shape[0]
    states = [("hx[0]" if mode == LSTM else "hx", h), ("hx[1]", c)] if mode == LSTM else [("hx", h)]
    for name, s in states:
        if s is None:
            continue
        _check_float(op, name, s, input.device, input.dtype)
        expected = (hidden,) if unbatched else (batch, hidden)
        _check_shape(op, name, s, expected)
    if unbatched:
        input = input.unsqueeze(0)
        h = h.unsqueeze(0) if h is not None else None
        c = c.unsqueeze(0) if c is not None else None
    if h is None:
        h = input.new_zeros((batch, hidden))
    if mode == LSTM and c is None:
        c = input.new_zeros((batch, hidden))
    input, h, c, w_ih, w_hh, b_ih, b_hh = _autocast([input, h, c, w_ih, w_hh, b_ih, b_hh])
    chosen = backend.select(op, input, _limits(input.dtype))
    save = _needs_grad(input, h, c, w_ih, w_hh, b_ih, b_hh)
    fn = reference.rnn_cell_forward if chosen == "torch" else _ops(chosen).rnn_cell_forward
    hy, cy, _ = fn(mode, input, h, c, w_ih, w_hh, b_ih, b_hh, save and chosen != "torch")
    if unbatched:
        hy, cy = hy.squeeze(0), (cy.squeeze(0) if mode == LSTM else cy)
    return hy, cy


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step, torch.nn.LSTMCell's math: returns (h1, c1). ``hx`` = (h, c) or None (zeros).

    The two gate products and the gate math run in one fused kernel; the four gates never go
    through memory as separate tensors."""
    if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
        raise TypeError(f"bigkern.ops.lstm_cell: hx must be a tuple (h, c) or None, got {type(hx).__name__}")
    h, c = (None, None) if hx is None else hx
    return _cell("lstm_cell", LSTM, x, h, c, w_ih, w_hh, b_ih, b_hh)


def gru_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step, torch.nn.GRUCell's math: returns h1. ``hx`` None means zeros."""
    return _cell("gru_cell", GRU, x, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


def rnn_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One plain RNN step, torch.nn.RNNCell's math (``nonlinearity`` "tanh" or "relu"): returns h1."""
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"bigkern.ops.rnn_cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _cell("rnn_cell", _NONLINEARITIES[nonlinearity], x, hx, None, w_ih, w_hh, b_ih, b_hh)[0]


# ---------------------------------------------------------------------------------------------
# Whole sequences
# ---------------------------------------------------------------------------------------------


def _split_params(op, mode, params, num_layers, directions, has_biases):
    """[(w_ih, w_hh, b_ih, b_hh, w_hr)] per (layer, direction), from torch.nn's flat order."""
    params = list(params)
    per = 2 + (2 if has_biases else 0)
    if len(params) == num_layers * directions * (per + 1) and mode == LSTM:
        per += 1
    if len(params) != num_layers * directions * per:
        raise ValueError(
            f"bigkern.ops.{op}: got {len(params)} parameter tensors; expected {num_layers * directions * per} "
            f"({per} per layer and direction for num_layers={num_layers}, "
            f"{'bidirectional' if directions == 2 else 'unidirectional'}, has_biases={has_biases})"
        )
    groups = []
    for k in range(num_layers * directions):
        chunk = params[k * per : (k + 1) * per]
        w_ih, w_hh = chunk[0], chunk[1]
        b_ih, b_hh = (chunk[2], chunk[3]) if has_biases else (None, None)
        w_hr = chunk[-1] if per in (3, 5) else None
        groups.append((w_ih, w_hh, b_ih, b_hh, w_hr))
    return groups


def _check_layer_params(op, mode, groups, input_size, directions, dtype, device):
    gates = GATES[mode]
    hidden = groups[0][1].shape[0] // gates if groups[0][1].dim() == 2 else -1
    out_size = groups[0][4].shape[0] if groups[0][4] is not None else hidden
    for k, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(groups):
        layer, d = divmod(k, directions)
        suffix = f"_l{layer}" + ("_reverse" if d else "")
        in_size = input_size if layer == 0 else out_size * directions
        for name, t, shape in (
            ("weight_ih", w_ih, (gates * hidden, in_size)),
            ("weight_hh", w_hh, (gates * hidden, out_size)),
            ("bias_ih", b_ih, (gates * hidden,)),
            ("bias_hh", b_hh, (gates * hidden,)),
            ("weight_hr", w_hr, (out_size, hidden)),
        ):
            if t is None:
                continue
            _check_float(op, name + suffix, t, device, dtype)
            _check_shape(op, name + suffix, t, shape)
    return hidden, out_size


def _sequence(op, mode, input, hx, params, num_layers, bidirectional, batch_first, dropout, training, has_biases):
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"bigkern.ops.{op}: num_layers must be a positive int, got {num_layers!r}")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"bigkern.ops.{op}: dropout must be a number in [0, 1], got {dropout!r}")
    directions = 2 if bidirectional else 1
    packed = isinstance(input, PackedSequence)
    data = input.data if packed else input
    _check_float(op, "input", data)
    if packed:
        if data.dim() != 2:
            raise ValueError(f"bigkern.ops.{op}: a PackedSequence's data must be 2-D, got shape {tuple(data.shape)}")
        batch_sizes = input.batch_sizes
        batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
        unbatched = False
    else:
        if data.dim() not in (2, 3):
            raise ValueError(
                f"bigkern.ops.{op}: input must be 2-D (seq_len, input_size) unbatched or 3-D "
                f"({'batch, seq_len' if batch_first else 'seq_len, batch'}, input_size), got {data.dim()}-D of shape "
                f"{tuple(data.shape)}"
            )
        unbatched = data.dim() == 2
        seq = data.unsqueeze(1) if unbatched else (data.transpose(0, 1) if batch_first else data)
        steps, batch = seq.shape[0], seq.shape[1]
        if steps == 0:
            raise ValueError(f"bigkern.ops.{op}: input has sequence length 0; expected at least one step (as torch.nn)")
        data = seq.reshape(steps * batch, seq.shape[2])
        batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
    groups = _split_params(op, mode, params, num_layers, directions, has_biases)
    hidden, out_size = _check_layer_params(op, mode, groups, data.shape[-1], directions, data.dtype, data.device)

    h0, c0 = _initial_state(op, mode, hx, num_layers * directions, batch, hidden, out_size, unbatched, data)
    if batch == 0:  # torch.nn returns empty results for an empty batch
        output = data.new_empty((steps, 0, directions * out_size))
        return (output.transpose(0, 1) if batch_first else output), h0, c0
    if packed and input.sorted_indices is not None:
        h0 = h0.index_select(1, input.sorted_indices)
        c0 = c0.index_select(1, input.sorted_indices) if c0 is not None else None

    flat = [t for g in groups for t in g]
    cast = _autocast([data, h0, c0, *flat])
    data, h0, c0, flat = cast[0], cast[1], cast[2], cast[3:]
    groups = [tuple(flat[k * 5 : (k + 1) * 5]) for k in range(len(groups))]
    chosen = backend.select(op, data, _limits(data.dtype))

    layer_input, h_n, c_n = data, [], []
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            k = layer * directions + d
            w_ih, w_hh, b_ih, b_hh, w_hr = groups[k]
            x_proj = torch.addmm(b_ih, layer_input, w_ih.t()) if b_ih is not None else layer_input @ w_ih.t()
            c_init = c0[k] if mode == LSTM else None
            save = _needs_grad(x_proj, h0, c_init, w_hh, b_hh, w_hr)
            if chosen == "torch":
                out, hy, cy, _ = reference.rnn_layer_forward(
                    mode, x_proj, batch_sizes, h0[k], c_init, w_hh, b_hh, w_hr, d == 1, False
                )
            else:
                out, hy, cy, _ = _ops(chosen).rnn_layer_forward(
                    mode, x_proj.contiguous(), batch_sizes, h0[k].contiguous(),
                    c_init.contiguous() if c_init is not None else None, w_hh.contiguous(),
                    b_hh.contiguous() if b_hh is not None else None, w_hr.contiguous() if w_hr is not None else None,
                    d == 1, save,
                )  # fmt: skip
            outputs.append(out)
            h_n.append(hy)
            c_n.append(cy)
        layer_input = torch.cat(outputs, dim=1) if directions == 2 else outputs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = torch.nn.functional.dropout(layer_input, dropout, training=True)

    h_n = torch.stack(h_n)
    c_n = torch.stack(c_n) if mode == LSTM else None
    if packed:
        if input.unsorted_indices is not None:
            h_n = h_n.index_select(1, input.unsorted_indices)
            c_n = c_n.index_select(1, input.unsorted_indices) if c_n is not None else None
        output = PackedSequence(layer_input, batch_sizes, input.sorted_indices, input.unsorted_indices)
    else:
        output = layer_input.reshape(steps, batch, -1)
        if unbatched:
            output, h_n = output.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif batch_first:
            output = output.transpose(0, 1)
    return output, h_n, c_n


def _initial_state(op, mode, hx, stacks, batch, hidden, out_size, unbatched, data):
    """(h0, c0) as (stacks, batch, *) tensors; zeros where hx is None."""
    h_shape = (stacks, out_size) if unbatched else (stacks, batch, out_size)
    c_shape = (stacks, hidden) if unbatched else (stacks, batch, hidden)
    if hx is None:
        h0 = data.new_zeros((stacks, batch, out_size))
        return h0, data.new_zeros((stacks, batch, hidden)) if mode == LSTM else None
    if mode == LSTM:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"bigkern.ops.{op}: hx must be a tuple (h_0, c_0) or None, got {type(hx).__name__}")
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    _check_float(op, "h_0" if mode == LSTM else "hx", h0, data.device, data.dtype)
    _check_shape(op, "h_0" if mode == LSTM else "hx", h0, h_shape)
    if c0 is not None:
        _check_float(op, "c_0", c0, data.device, data.dtype)
        _check_shape(op, "c_0", c0, c_shape)
    if unbatched:
        h0 = h0.unsqueeze(1)
        c0 = c0.unsqueeze(1) if c0 is not None else None
    return h0, c0


def lstm(x, hx, params, num_layers, bidirectional, batch_first, dropout, training, *, has_biases=True):
    """Whole-sequence, multi-layer LSTM with torch.nn.LSTM's semantics: returns (output, (h_n, c_n)).

    ``x``: (L, N, H_in), (N, L, H_in) with ``batch_first``, (L, H_in) unbatched, or a
    PackedSequence (the output is then a PackedSequence; ``hx`` is in the caller's batch order).
    ``params``: torch.nn.LSTM's flat weights in its order (``module._flat_weights``): per layer and
    direction w_ih, w_hh[, b_ih, b_hh][, w_hr]; a projection (proj_size) is recognised by w_hr.
    ``dropout`` applies to the outputs of every layer but the last when ``training``.
    """
    output, h_n, c_n = _sequence("lstm", LSTM, x, hx, params, num_layers, bidirectional, batch_first, dropout,
                                 training, has_biases)  # fmt: skip
    return output, (h_n, c_n)


def gru(x, hx, params, num_layers, bidirectional, batch_first, dropout, training, *, has_biases=True):
    """Whole-sequence, multi-layer GRU with torch.nn.GRU's semantics: returns (output, h_n)."""
    output, h_n, _ = _sequence("gru", GRU, x, hx, params, num_layers, bidirectional, batch_first, dropout, training,
                               has_biases)  # fmt: skip
    return output, h_n


def rnn(x, hx, params, num_layers, bidirectional, batch_first, dropout, training, *, has_biases=True,
        nonlinearity="tanh"):  # fmt: skip
    """Whole-sequence, multi-layer Elman RNN with torch.nn.RNN's semantics: returns (output, h_n)."""
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"bigkern.ops.rnn: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    output, h_n, _ = _sequence("rnn", _NONLINEARITIES[nonlinearity], x, hx, params, num_layers, bidirectional,
                               batch_first, dropout, training, has_biases)  # fmt: skip
    return output, h_n
