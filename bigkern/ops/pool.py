"""Pooling ops: max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d.

torch.nn.functional semantics (output-size rules, NaN propagation in max, index convention
``ih * W + iw`` per plane, output in the input's suggested memory format), for 4-D batched and
3-D unbatched input. Each call validates its arguments, picks a backend (bigkern.backend), and
runs ``torch.ops.bigkern.<op>`` (C++ CPU/CUDA kernels), ``torch.ops.bigkern_triton.<op>``
(Triton kernels) or the plain-PyTorch reference.

This module also registers, once per op and for both op namespaces, the fake kernels (shapes
and strides for torch.compile / meta tensors) and the autograd formulas (which call the
matching ``*_backward`` op of the same namespace).

Inference never writes an index tensor: indices are computed only when the caller asks for
them or autograd will need them.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from bigkern import _library, backend
from bigkern.ops._args import check_non_negative, check_positive, check_tensor, pair
from bigkern.reference import pool as reference

# ---------------------------------------------------------------------------------------------
# Geometry (the same rules as csrc/common/pool_geometry.h, for fake kernels and validation)
# ---------------------------------------------------------------------------------------------


def pooled_size(in_size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a pooling window along one dimension (torch's rule)."""
    out = (in_size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= in_size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def _empty_output(x: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device, memory_format=suggest_memory_format(x))


def _no_indices(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(0, dtype=torch.int64, device=x.device)


# ---------------------------------------------------------------------------------------------
# Fake kernels and autograd formulas, registered for bigkern:: and bigkern_triton::
# ---------------------------------------------------------------------------------------------


def _register_max_pool2d(ns: str) -> None:
    def fake(x, kernel_size, stride, padding, dilation, ceil_mode, compute_indices):
        n, c, h, w = x.shape
        oh, ow = (pooled_size(s, k, p, st, d, ceil_mode) for s, k, p, st, d in zip((h, w), kernel_size, padding, stride, dilation))
        out = _empty_output(x, (n, c, oh, ow))
        return out, (_empty_output(x, (n, c, oh, ow), torch.int64) if compute_indices else _no_indices(x))

    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, ceil_mode, _ = inputs
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, output[1])

    def backward(ctx, grad_out, _grad_indices):
        x, indices = ctx.saved_tensors
        if indices.numel() == 0 and grad_out.numel() > 0:
            raise RuntimeError(f"{ns}::max_pool2d: backward needs the indices; call it with compute_indices=True")
        grad_in = getattr(torch.ops, ns).max_pool2d_backward(grad_out, x, indices, *ctx.args)
        return grad_in, None, None, None, None, None, None

    torch.library.register_fake(f"{ns}::max_pool2d", fake)
    torch.library.register_fake(f"{ns}::max_pool2d_backward", lambda g, x, *_: _empty_output(x, x.shape))
    torch.library.register_autograd(f"{ns}::max_pool2d", backward, setup_context=setup_context)


def _register_avg_pool2d(ns: str) -> None:
    def fake(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        n, c, h, w = x.shape
        oh, ow = (pooled_size(s, k, p, st, 1, ceil_mode) for s, k, p, st in zip((h, w), kernel_size, padding, stride))
        return _empty_output(x, (n, c, oh, ow))

    def setup_context(ctx, inputs, output):
        x, *args = inputs
        ctx.args = tuple(args)
        ctx.save_for_backward(x)

    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_in = getattr(torch.ops, ns).avg_pool2d_backward(grad_out, x, *ctx.args)
        return grad_in, None, None, None, None, None, None

    torch.library.register_fake(f"{ns}::avg_pool2d", fake)
    torch.library.register_fake(f"{ns}::avg_pool2d_backward", lambda g, x, *_: _empty_output(x, x.shape))
    torch.library.register_autograd(f"{ns}::avg_pool2d", backward, setup_context=setup_context)


def _register_adaptive_avg_pool2d(ns: str) -> None:
    def fake(x, output_size):
        return _empty_output(x, (x.shape[0], x.shape[1], *output_size))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return getattr(torch.ops, ns).adaptive_avg_pool2d_backward(grad_out, x), None

    torch.library.register_fake(f"{ns}::adaptive_avg_pool2d", fake)
    torch.library.register_fake(f"{ns}::adaptive_avg_pool2d_backward", lambda g, x: _empty_output(x, x.shape))
    torch.library.register_autograd(f"{ns}::adaptive_avg_pool2d", backward, setup_context=setup_context)


def _register_adaptive_max_pool2d(ns: str) -> None:
    def fake(x, output_size, compute_indices):
        shape = (x.shape[0], x.shape[1], *output_size)
        return _empty_output(x, shape), (_empty_output(x, shape, torch.int64) if compute_indices else _no_indices(x))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[1])

    def backward(ctx, grad_out, _grad_indices):
        x, indices = ctx.saved_tensors
        if indices.numel() == 0 and grad_out.numel() > 0:
            raise RuntimeError(f"{ns}::adaptive_max_pool2d: backward needs the indices; call it with compute_indices=True")
        return getattr(torch.ops, ns).adaptive_max_pool2d_backward(grad_out, x, indices), None, None

    torch.library.register_fake(f"{ns}::adaptive_max_pool2d", fake)
    torch.library.register_fake(f"{ns}::adaptive_max_pool2d_backward", lambda g, x, i: _empty_output(x, x.shape))
    torch.library.register_autograd(f"{ns}::adaptive_max_pool2d", backward, setup_context=setup_context)


_OPS = (
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
)  # fmt: skip
for _name in _OPS:
    _library.define_triton_twin(_name, _library.lazy_triton_kernel("pool", _name))
for _ns in (_library.NATIVE_NAMESPACE, _library.TRITON_NAMESPACE):
    _register_max_pool2d(_ns)
    _register_avg_pool2d(_ns)
    _register_adaptive_avg_pool2d(_ns)
    _register_adaptive_max_pool2d(_ns)


# ---------------------------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------------------------


def _batched(op: str, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    check_tensor(op, "input", x, ranks=(3, 4))
    if x.shape[-3] == 0 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"bigkern.ops.{op}: input of shape {tuple(x.shape)} has an empty channel or spatial dim")
    return (x.unsqueeze(0), True) if x.dim() == 3 else (x, False)


def _unbatched(t: torch.Tensor, squeeze: bool) -> torch.Tensor:
    return t.squeeze(0) if squeeze else t


def _ops_for(backend_name: str):
    return torch.ops.bigkern_triton if backend_name == "triton" else torch.ops.bigkern


def _needs_indices(x: torch.Tensor, return_indices: bool) -> bool:
    return return_indices or (torch.is_grad_enabled() and x.requires_grad)


def _window_args(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else pair(op, "stride", stride)
    padding = pair(op, "padding", padding)
    dilation = pair(op, "dilation", dilation)
    check_positive(op, "kernel_size", kernel)
    check_positive(op, "stride", stride)
    check_positive(op, "dilation", dilation)
    check_non_negative(op, "padding", padding)
    if any(p > k // 2 for p, k in zip(padding, kernel)):  # torch's limit: half the undilated kernel
        raise ValueError(f"bigkern.ops.{op}: padding {tuple(padding)} must be at most half of kernel_size {tuple(kernel)}")
    h, w = x.shape[-2:]
    out = [pooled_size(s, k, p, st, d, ceil_mode) for s, k, p, st, d in zip((h, w), kernel, padding, stride, dilation)]
    if min(out) < 1:
        raise ValueError(
            f"bigkern.ops.{op}: input of spatial size ({h}, {w}) is smaller than kernel_size {tuple(kernel)} "
            f"(dilation {tuple(dilation)}) with padding {tuple(padding)}: the output size would be {tuple(out)}"
        )
    return kernel, stride, padding, dilation


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling with the semantics of torch.nn.functional.max_pool2d."""
    op = "max_pool2d"
    x4, squeeze = _batched(op, x)
    kernel, stride, padding, dilation = _window_args(op, x4, kernel_size, stride, padding, dilation, ceil_mode)
    chosen = backend.select(op, x4)
    if chosen == "torch":
        return reference.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices)
    out, indices = _ops_for(chosen).max_pool2d(
        x4, kernel, stride, padding, dilation, bool(ceil_mode), _needs_indices(x4, return_indices)
    )
    if return_indices:
        return _unbatched(out, squeeze), _unbatched(indices, squeeze)
    return _unbatched(out, squeeze)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """2-D average pooling with the semantics of torch.nn.functional.avg_pool2d."""
    op = "avg_pool2d"
    x4, squeeze = _batched(op, x)
    kernel, stride, padding, _ = _window_args(op, x4, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
        raise ValueError(f"bigkern.ops.{op}: divisor_override must be a non-zero int or None, got {divisor_override!r}")
    chosen = backend.select(op, x4)
    if chosen == "torch":
        return reference.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    out = _ops_for(chosen).avg_pool2d(
        x4, kernel, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override
    )
    return _unbatched(out, squeeze)


def _adaptive_size(op: str, x: torch.Tensor, output_size) -> list[int]:
    size = pair(op, "output_size", output_size, allow_none=True)
    size = [x.shape[-2 + i] if s is None else s for i, s in enumerate(size)]  # None keeps the input size
    check_positive(op, "output_size", size)
    return size


def adaptive_avg_pool2d(x, output_size):
    """2-D adaptive average pooling with the semantics of torch.nn.functional.adaptive_avg_pool2d."""
    op = "adaptive_avg_pool2d"
    x4, squeeze = _batched(op, x)
    size = _adaptive_size(op, x4, output_size)
    chosen = backend.select(op, x4)
    if chosen == "torch":
        return reference.adaptive_avg_pool2d(x, size)
    return _unbatched(_ops_for(chosen).adaptive_avg_pool2d(x4, size), squeeze)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """2-D adaptive max pooling with the semantics of torch.nn.functional.adaptive_max_pool2d."""
    op = "adaptive_max_pool2d"
    x4, squeeze = _batched(op, x)
    size = _adaptive_size(op, x4, output_size)
    chosen = backend.select(op, x4)
    if chosen == "torch":
        return reference.adaptive_max_pool2d(x, size, return_indices)
    out, indices = _ops_for(chosen).adaptive_max_pool2d(x4, size, _needs_indices(x4, return_indices))
    if return_indices:
        return _unbatched(out, squeeze), _unbatched(indices, squeeze)
    return _unbatched(out, squeeze)
