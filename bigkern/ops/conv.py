"""Convolution: conv2d with a fused epilogue (bias, residual, activation), forward and backward.

``bigkern.ops.conv2d`` has torch.nn.functional.conv2d's semantics (padding as an int, a pair,
"same" or "valid"; groups, depthwise included; 3-D unbatched input; output in the input's
suggested memory format) and adds, in the same kernel, what usually follows a convolution:

    out = activation(conv2d(x, weight) + bias + residual)

with activation None, "relu", "gelu" (erf form, F.gelu's default) or "silu", and residual an
optional tensor of the output's shape added before the activation (a ResNet block's tail).

Each call validates its arguments, picks a backend (bigkern.backend) and runs
``torch.ops.bigkern.conv2d`` (C++ CPU / CUDA kernels), ``torch.ops.bigkern_triton.conv2d`` (Triton)
or the plain-PyTorch reference. This module also registers, for both namespaces, the fake kernels
and the autograd formula: the forward keeps the pre-activation only for gelu and silu (relu's
derivative is read from the output itself), and the backward op forms the activation's
gradient, the input gradient (dgrad), the weight gradient (wgrad) and the bias gradient in one
call; the residual's gradient is the pre-activation's.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from bigkern import _library, backend
from bigkern.ops._args import check_non_negative, check_positive, pair
from bigkern.reference import conv as reference

#: activation name -> the op contract's code (csrc/schema/conv.cpp)
ACTIVATION_CODES = {None: 0, "relu": 1, "gelu": 2, "silu": 3}

#: dtypes each backend's kernels take; others fall back (auto) or raise (explicit backend)
_SUPPORTED = {
    "cpu": (torch.float32, torch.bfloat16, torch.float64),
    "cuda": (torch.float32, torch.float16, torch.bfloat16, torch.float64),
    "triton": (torch.float32, torch.float16, torch.bfloat16, torch.float64),
}


def output_size(in_size: int, kernel: int, pad_begin: int, pad_end: int, stride: int, dilation: int) -> int:
    return (in_size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _output_shape(x_shape, w_shape, stride, padding, dilation) -> tuple[int, int, int, int]:
    n, _, h, w = x_shape
    k, _, r, s = w_shape
    top, left, bottom, right = padding
    return (n, k, output_size(h, r, top, bottom, stride[0], dilation[0]), output_size(w, s, left, right, stride[1], dilation[1]))


# ---------------------------------------------------------------------------------------------
# Fake kernels and autograd, registered for bigkern:: and bigkern_triton::
# ---------------------------------------------------------------------------------------------


def _register(ns: str) -> None:
    def fake(x, weight, bias, residual, stride, padding, dilation, groups, activation, save_preactivation):
        shape = _output_shape(x.shape, weight.shape, stride, padding, dilation)
        fmt = suggest_memory_format(x)
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        keep = save_preactivation and activation in (2, 3)
        pre = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt) if keep else x.new_empty(0)
        return out, pre

    def fake_backward(grad_output, x, weight, activation_input, stride, padding, dilation, groups, activation, mask):
        fmt = suggest_memory_format(x)
        empty = x.new_empty(0)
        return (
            torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt) if mask[0] else empty,
            torch.empty(weight.shape, dtype=weight.dtype, device=x.device) if mask[1] else empty,
            x.new_empty(weight.shape[0]) if mask[2] else empty,
            torch.empty(grad_output.shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(grad_output))
            if mask[3] and activation != 0 else empty,
        )  # fmt: skip

    def setup_context(ctx, inputs, output):
        x, weight, bias, residual, stride, padding, dilation, groups, activation, _ = inputs
        ctx.args = (stride, padding, dilation, groups, activation)
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
        activation_input = output[0] if activation == 1 else output[1] if activation in (2, 3) else x.new_empty(0)
        ctx.save_for_backward(x, weight, activation_input)

    def backward(ctx, grad_out, _grad_pre):
        x, weight, activation_input = ctx.saved_tensors
        stride, padding, dilation, groups, activation = ctx.args
        needs = ctx.needs_input_grad
        if activation in (2, 3) and activation_input.numel() == 0:
            raise RuntimeError(f"{ns}::conv2d: backward through {reference.ACTIVATIONS[activation]} needs the "
                               "pre-activation; call the op with save_preactivation=True")  # fmt: skip
        residual_grad = needs[3] and activation != 0
        mask = [needs[0], needs[1], needs[2] and ctx.has_bias, residual_grad]
        gi, gw, gb, gz = getattr(torch.ops, ns).conv2d_backward(
            grad_out.contiguous(memory_format=suggest_memory_format(x)), x, weight, activation_input,
            stride, padding, dilation, groups, activation, mask,
        )  # fmt: skip
        residual = (gz if activation != 0 else grad_out) if needs[3] and ctx.has_residual else None
        return (
            gi if needs[0] else None, gw if needs[1] else None, gb if mask[2] else None, residual,
            None, None, None, None, None, None,
        )  # fmt: skip

    torch.library.register_fake(f"{ns}::conv2d", fake)
    torch.library.register_fake(f"{ns}::conv2d_backward", fake_backward)
    torch.library.register_autograd(f"{ns}::conv2d", backward, setup_context=setup_context)


for _name in ("conv2d", "conv2d_backward"):
    _library.define_triton_twin(_name, _library.lazy_triton_kernel("conv2d", _name))
for _ns in (_library.NATIVE_NAMESPACE, _library.TRITON_NAMESPACE):
    _register(_ns)


# ---------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------

OP = "conv2d"


def _check_operand(name: str, t, x: torch.Tensor | None, rank: int | tuple) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"bigkern.ops.{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    ranks = (rank,) if isinstance(rank, int) else rank
    if t.dim() not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"bigkern.ops.{OP}: {name} must be {expected}, got {t.dim()}-D of shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"bigkern.ops.{OP}: {name} has dtype {t.dtype}; expected float32, float16, bfloat16 or float64")
    if x is not None and t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):  # autocast casts them all
        raise TypeError(f"bigkern.ops.{OP}: {name} has dtype {t.dtype} but the input is {x.dtype}; they must match")
    if x is not None and t.device != x.device:
        raise ValueError(f"bigkern.ops.{OP}: {name} is on {t.device} but the input is on {x.device}; they must match")


def padding_sides(padding, kernel, dilation, stride) -> list[int]:
    """F.conv2d's padding argument as [top, left, bottom, right]."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise ValueError(f"bigkern.ops.{OP}: padding={padding!r} is not supported; expected 'same', 'valid', an int or a pair")
        if any(s != 1 for s in stride):
            raise ValueError(f"bigkern.ops.{OP}: padding='same' needs stride 1 (as in torch), got stride {tuple(stride)}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        begin = [t // 2 for t in total]  # torch puts the odd element at the end (bottom / right)
        return [begin[0], begin[1], total[0] - begin[0], total[1] - begin[1]]
    ph, pw = pair(OP, "padding", padding)
    check_non_negative(OP, "padding", [ph, pw])
    return [ph, pw, ph, pw]


def _autocast(tensors):
    """torch.autocast: convolutions run in the autocast dtype, as torch's do."""
    device_type = tensors[0].device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return [None if t is None else t.to(dtype) for t in tensors]
    return list(tensors)


def _limits(dtype: torch.dtype):
    def limits(name: str) -> str | None:
        if dtype not in _SUPPORTED[name]:
            allowed = ", ".join(str(d).replace("torch.", "") for d in _SUPPORTED[name])
            return f"the {name} convolution kernels take {allowed}; got {dtype}"
        return None

    return limits


# ---------------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None, residual=None):
    """2-D convolution with the semantics of torch.nn.functional.conv2d, plus a fused epilogue.

    Returns ``activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + residual)``
    computed in one kernel. activation: None, "relu", "gelu" or "silu". residual: None or a tensor
    of the output's shape (any layout), added before the activation.
    """
    _check_operand("input", x, None, (3, 4))
    _check_operand("weight", weight, x, 4)
    squeeze = x.dim() == 3
    x4 = x.unsqueeze(0) if squeeze else x
    n, c, h, w = x4.shape
    k, c_per_group, r, s = weight.shape
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"bigkern.ops.{OP}: groups must be a positive int, got {groups!r}")
    if c != c_per_group * groups:
        raise ValueError(
            f"bigkern.ops.{OP}: input has {c} channels but weight of shape {tuple(weight.shape)} with groups={groups} "
            f"expects {c_per_group * groups}"
        )
    if k % groups != 0 or k == 0:
        raise ValueError(f"bigkern.ops.{OP}: weight has {k} output channels, which must be a positive multiple of groups={groups}")
    if min(r, s, c_per_group) == 0 or min(c, h, w) == 0:
        raise ValueError(f"bigkern.ops.{OP}: input {tuple(x.shape)} and weight {tuple(weight.shape)} must not have empty channel or spatial dims")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"bigkern.ops.{OP}: activation={activation!r} is not supported; expected None, 'relu', 'gelu' or 'silu'")
    stride = pair(OP, "stride", stride)
    dilation = pair(OP, "dilation", dilation)
    check_positive(OP, "stride", stride)
    check_positive(OP, "dilation", dilation)
    sides = padding_sides(padding, (r, s), dilation, stride)
    shape = _output_shape(x4.shape, weight.shape, stride, sides, dilation)
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(
            f"bigkern.ops.{OP}: the input's spatial size ({h}, {w}) padded by {tuple(sides)} (top, left, bottom, right) "
            f"is smaller than the kernel ({r}, {s}) dilated by {tuple(dilation)}: the output size would be {shape[2:]}"
        )
    if bias is not None:
        _check_operand("bias", bias, x, 1)
        if bias.shape[0] != k:
            raise ValueError(f"bigkern.ops.{OP}: bias has shape {tuple(bias.shape)}; expected ({k},)")
    if residual is not None:
        _check_operand("residual", residual, x, x.dim())
        expected = shape[1:] if squeeze else shape
        if tuple(residual.shape) != tuple(expected):
            raise ValueError(f"bigkern.ops.{OP}: residual has shape {tuple(residual.shape)}; expected the output's {tuple(expected)}")
    residual4 = residual.unsqueeze(0) if (residual is not None and squeeze) else residual
    x4, weight, bias, residual4 = _autocast([x4, weight, bias, residual4])
    code = ACTIVATION_CODES[activation]
    chosen = backend.select(OP, x4, _limits(x4.dtype))
    if chosen == "torch" or n == 0:  # an empty batch needs no kernel: torch's own op gives the empty result
        out, _ = reference.conv2d(x4, weight, bias, residual4, stride, sides, dilation, groups, code, False)
    else:
        needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x4, weight, bias, residual4))
        ops = torch.ops.bigkern_triton if chosen == "triton" else torch.ops.bigkern
        out, _ = ops.conv2d(x4, weight, bias, residual4, stride, sides, dilation, groups, code, needs_grad and code in (2, 3))
    return out.squeeze(0) if squeeze else out
