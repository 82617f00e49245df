"""Reference convolution: the conv2d contract of csrc/schema/conv.cpp written with
torch.nn.functional, the oracle the kernels are tested against and the "torch" backend.

``conv2d`` is the op contract itself (explicit four-sided padding, activation code, the saved
pre-activation); ``conv2d_backward`` is its backward written by hand from that contract (the
activation derivative, then the input and weight gradients through torch's own convolution
backward), so tests can check each backend's backward op directly, not only through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: activation code of the op contract -> name in bigkern.ops.conv2d
ACTIVATIONS = {0: None, 1: "relu", 2: "gelu", 3: "silu"}


def activate(z: torch.Tensor, activation: int) -> torch.Tensor:
    if activation == 0:
        return z
    if activation == 1:
        return torch.relu(z)
    if activation == 2:
        return F.gelu(z)
    if activation == 3:
        return F.silu(z)
    raise ValueError(f"activation code must be 0 (none), 1 (relu), 2 (gelu) or 3 (silu), got {activation}")


def activation_derivative(activation_input: torch.Tensor, activation: int) -> torch.Tensor:
    """d act(z) / dz, from z (gelu, silu) or from act(z) itself (relu)."""
    if activation == 1:
        return (activation_input > 0).to(activation_input.dtype)
    z = activation_input
    if activation == 2:
        cdf = 0.5 * (1.0 + torch.erf(z * 0.7071067811865476))
        pdf = torch.exp(-0.5 * z * z) * 0.3989422804014327
        return cdf + z * pdf
    if activation == 3:
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    raise ValueError(f"activation code {activation} has no derivative here")


def _padded(x: torch.Tensor, padding) -> tuple[torch.Tensor, list[int]]:
    """Symmetric padding stays in F.conv2d; an asymmetric remainder is applied with F.pad."""
    top, left, bottom, right = padding
    sym = [min(top, bottom), min(left, right)]
    extra = [left - sym[1], right - sym[1], top - sym[0], bottom - sym[0]]
    if any(extra):
        x = F.pad(x, extra)
    return x, sym


def conv(x, weight, stride, padding, dilation, groups) -> torch.Tensor:
    x, sym = _padded(x, padding)
    return F.conv2d(x, weight, None, stride, sym, dilation, groups)


def conv2d(x, weight, bias, residual, stride, padding, dilation, groups, activation, save_preactivation):
    """The op contract: (out, preactivation) with out = act(conv + bias + residual)."""
    z = conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        z = z + bias.view(1, -1, 1, 1)
    if residual is not None:
        z = z + residual
    out = activate(z, activation)
    keep = save_preactivation and activation in (2, 3)
    return out, (z if keep else x.new_empty(0))


def conv2d_backward(grad_output, x, weight, activation_input, stride, padding, dilation, groups, activation, output_mask):
    """The backward op contract, computed in grad_output's dtype."""
    grad_z = grad_output if activation == 0 else grad_output * activation_derivative(activation_input, activation)
    x_padded, sym = _padded(x, padding)
    grad_input = grad_weight = None
    if output_mask[0] or output_mask[1]:
        with torch.enable_grad():
            xp = x_padded.detach().requires_grad_(output_mask[0])
            xw = weight.detach().requires_grad_(output_mask[1])
            y = F.conv2d(xp, xw, None, stride, sym, dilation, groups)
            wanted = [t for t, m in ((xp, output_mask[0]), (xw, output_mask[1])) if m]
            grads = list(torch.autograd.grad(y, wanted, grad_z))
        if output_mask[0]:
            grad_input = grads.pop(0)
            top, left, bottom, right = padding
            extra_top, extra_left = top - sym[0], left - sym[1]
            grad_input = grad_input[:, :, extra_top : extra_top + x.shape[2], extra_left : extra_left + x.shape[3]]
        if output_mask[1]:
            grad_weight = grads.pop(0)
    empty = x.new_empty(0)
    return (
        empty if grad_input is None else grad_input,
        empty if grad_weight is None else grad_weight.contiguous(),
        grad_z.sum(dim=(0, 2, 3)) if output_mask[2] else empty,
        grad_z if (output_mask[3] and activation != 0) else empty,
    )
