"""Drop-in convolution: bigkern.nn.Conv2d, a subclass of torch.nn.Conv2d with the same
constructor (padding_mode included), parameters, state_dict and repr, whose forward runs
bigkern.ops.conv2d; and FusedConv2d, the class ``bigkern.swap`` gives a Conv2d it has fused with
the BatchNorm2d and/or activation after it (bigkern/fusion.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigkern import ops
from bigkern.swap import register_swappable


class Conv2d(torch.nn.Conv2d):
    def _conv_forward(self, input, weight, bias, activation=None):
        padding = self.padding
        if self.padding_mode != "zeros":  # reflect / replicate / circular: torch's own padding, then none
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return ops.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups, activation=activation)


class FusedConv2d(Conv2d):
    """A Conv2d that also applies the BatchNorm2d and/or activation modules that followed it.

    Set by ``bigkern.swap``: the modules fused away keep their objects, parameters and buffers
    (so the state_dict is unchanged) but their class becomes an identity (bigkern/fusion.py); this
    conv holds them, unregistered, in ``_bigkern_fusion = (batch_norm or None, activation name or
    None)``. In eval mode the batch norm is folded into the weight and bias on every call (so a
    changed running mean or weight is always seen) and the activation runs in the conv's
    epilogue: one kernel. In training mode (batch statistics, running-stat updates) the batch
    norm runs as torch's module after the conv, then the activation.
    """

    _bigkern_original_class = torch.nn.Conv2d

    def forward(self, input):
        bn, activation = self._bigkern_fusion
        if bn is None:
            return self._conv_forward(input, self.weight, self.bias, activation)
        if not bn.training and bn.running_mean is not None:
            weight, bias = fold_batch_norm(self.weight, self.bias, bn)
            return self._conv_forward(input, weight, bias, activation)
        y = bn._bigkern_original_class.forward(bn, self._conv_forward(input, self.weight, self.bias))
        return y if activation is None else ACTIVATION_FUNCTIONS[activation](y)


ACTIVATION_FUNCTIONS = {"relu": torch.relu, "gelu": F.gelu, "silu": F.silu}


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None, bn: torch.nn.BatchNorm2d):
    """The weight and bias of conv-then-bn (eval mode) as one conv: w * s, (b - mean) * s + beta,
    s = gamma / sqrt(var + eps); computed in float32 (or float64) and cast back, differentiable."""
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(dtype)
    shift = -bn.running_mean.to(dtype) * scale if bias is None else (bias.to(dtype) - bn.running_mean.to(dtype)) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(dtype)
    return (weight.to(dtype) * scale.view(-1, 1, 1, 1)).to(weight.dtype), shift.to(weight.dtype)


register_swappable(torch.nn.Conv2d, Conv2d, "conv2d")
