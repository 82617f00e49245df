"""The convolution suite: bigkern.ops.conv2d (with its fused epilogue) against cuDNN / oneDNN,
the same convolution followed by torch's separate elementwise kernels, and torch.compile.

Cases (``cases``), each a conv layer with one epilogue:
    "conv2d"                conv + bias
    "conv2d+relu"           conv + bias, then ReLU
    "conv2d+residual+relu"  conv + bias + a residual tensor, then ReLU (a ResNet block's tail;
                            only where the output has the input's shape)
    CPU    the issue's acceptance shape: (8, 64, 56, 56) -> 64 channels, 3x3, stride 1, padding 1,
           float32, NCHW and channels_last, forward and forward+backward (--quick: forward)
    CUDA   ResNet-50's conv shapes at batch 64 (the 7x7 stem, the 1x1 and 3x3 convolutions of each
           stage) and two depthwise 3x3 layers, channels_last, bfloat16 unless dtypes are asked
           for (--quick: a subset, forward only)

Providers (``providers``): bigkern-cpu / bigkern-cuda / bigkern-triton (one fused call); "torch"
(F.conv2d then the epilogue as separate torch ops: oneDNN on the CPU, cuDNN on CUDA with
cudnn.benchmark on, so cuDNN picks its fastest algorithm per shape); "torch.compile" of the same
unfused code (default mode; also "torch.compile-max-autotune" on CUDA), when asked for.

FLOP model (TFLOP/s = FLOPs / median time):
    forward            2 * N * K * (C / groups) * R * S * P * Q   (the epilogue is not counted)
    forward+backward   3x the forward (dgrad and wgrad are products of the same size)

Bytes model (compulsory traffic, for the roofline; E bytes per element):
    forward            E * (N*C*H*W + K*(C/groups)*R*S + N*K*P*Q [+ N*K*P*Q residual])
    forward+backward   the forward + E * (2*N*K*P*Q + 2*N*C*H*W + 2*K*(C/groups)*R*S): the output
                       gradient read by dgrad and wgrad, the input read and its gradient written,
                       the weight read and its gradient written
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import bigkern
from bigkern.bench.harness import Case, Inputs, Provider, bigkern_providers, compile_providers, input_generators, make_tensor
from bigkern.ops.conv import output_size

EPILOGUES = {"conv2d": (None, False), "conv2d+relu": ("relu", False), "conv2d+residual+relu": ("relu", True)}

# (N, C, H, W, K, kernel, stride, groups)
CPU_LAYER = (8, 64, 56, 56, 64, 3, 1, 1)
RESNET50 = [
    (64, 3, 224, 224, 64, 7, 2, 1),  # stem (few input channels)
    (64, 64, 56, 56, 64, 1, 1, 1), (64, 64, 56, 56, 64, 3, 1, 1), (64, 64, 56, 56, 256, 1, 1, 1),
    (64, 128, 28, 28, 128, 3, 1, 1), (64, 512, 28, 28, 128, 1, 1, 1),
    (64, 256, 14, 14, 256, 3, 1, 1), (64, 1024, 14, 14, 256, 1, 1, 1),
    (64, 512, 7, 7, 512, 3, 1, 1), (64, 2048, 7, 7, 512, 1, 1, 1),
]  # fmt: skip
DEPTHWISE = [(64, 96, 56, 56, 96, 3, 1, 96), (64, 384, 14, 14, 384, 3, 1, 384)]
CUDA_QUICK = [RESNET50[0], RESNET50[2], RESNET50[6], RESNET50[7], DEPTHWISE[0]]


def conv_flops(n, c, h, w, k, kernel, stride, groups, direction: str) -> float:
    """FLOPs of one call by the model in the module docstring (padding kernel // 2)."""
    p, q = (output_size(s, kernel, kernel // 2, kernel // 2, stride, 1) for s in (h, w))
    forward = 2.0 * n * k * (c // groups) * kernel * kernel * p * q
    return forward * (3.0 if direction == "forward+backward" else 1.0)


def conv_bytes(n, c, h, w, k, kernel, stride, groups, dtype, direction: str, residual: bool) -> int:
    """Bytes of one call by the model in the module docstring."""
    p, q = (output_size(s, kernel, kernel // 2, kernel // 2, stride, 1) for s in (h, w))
    elem = torch.empty(0, dtype=dtype).element_size()
    x, wt, y = n * c * h * w, k * (c // groups) * kernel * kernel, n * k * p * q
    total = x + wt + y + (y if residual else 0)
    if direction == "forward+backward":
        total += 2 * y + 2 * x + 2 * wt
    return total * elem


def make_case(layer, op: str, dtype, layout: str, direction: str, seed: int = 0) -> Case:
    n, c, h, w, k, kernel, stride, groups = layer
    activation, with_residual = EPILOGUES[op]
    pad = kernel // 2
    p, q = (output_size(s, kernel, pad, pad, stride, 1) for s in (h, w))
    generators = input_generators(seed)

    def make_inputs(device) -> Inputs:
        device = torch.device(device)
        gen = generators(device)
        backward = direction == "forward+backward"
        x = make_tensor((n, c, h, w), dtype, device, layout, requires_grad=backward, generator=gen)
        fan_in = (c // groups) * kernel * kernel
        weight = make_tensor((k, c // groups, kernel, kernel), torch.float32, device, layout, generator=gen)
        weight = (weight * fan_in**-0.5).to(dtype).requires_grad_(backward)
        bias = torch.randn(k, device=device, generator=gen).to(dtype).requires_grad_(backward)
        residual = make_tensor((n, k, p, q), dtype, device, layout, generator=gen) if with_residual else None
        grad = make_tensor((n, k, p, q), dtype, device, layout, generator=gen) if backward else None
        return Inputs((x, weight, bias, residual), grad)

    return Case(
        op=op, shape=(n, c, h, w, k), dtype=dtype, layout=layout, direction=direction,
        params={"kernel": kernel, "stride": stride, "padding": pad, "groups": groups}, make_inputs=make_inputs,
        flops=lambda provider: conv_flops(n, c, h, w, k, kernel, stride, groups, direction),
        bytes_moved=lambda provider: conv_bytes(n, c, h, w, k, kernel, stride, groups, dtype, direction, with_residual),
        label=f"{op}({kernel}x{kernel},s{stride}" + (f",g{groups})" if groups > 1 else ")"),
    )  # fmt: skip


def cases(device, dtypes=None, quick: bool = False) -> list[Case]:
    """Every convolution case for ``device`` (see the module docstring)."""
    device = torch.device(device)
    result: list[Case] = []
    if device.type != "cuda":
        for dtype in dtypes or [torch.float32]:
            for direction in ("forward",) if quick else ("forward", "forward+backward"):
                for layout in ("nchw", "channels_last"):
                    for op in ("conv2d", "conv2d+relu"):
                        result.append(make_case(CPU_LAYER, op, dtype, layout, direction, len(result)))
        return result
    layers = CUDA_QUICK if quick else RESNET50 + DEPTHWISE
    for dtype in dtypes or [torch.bfloat16]:
        for direction in ("forward",) if quick else ("forward", "forward+backward"):
            for layer in layers:
                n, c, h, w, k, kernel, stride, groups = layer
                same_shape = c == k and stride == 1
                for op in ("conv2d", "conv2d+relu") + (("conv2d+residual+relu",) if same_shape else ()):
                    result.append(make_case(layer, op, dtype, "channels_last", direction, len(result)))
    return result


def providers(case: Case, device, *, compile: bool = False) -> list[Provider]:
    """bigkern's backends (fused), torch eager (conv then separate epilogue ops), torch.compile."""
    device = torch.device(device)
    activation, _ = EPILOGUES[case.op]
    stride, padding, groups = case.params["stride"], case.params["padding"], case.params["groups"]

    def bigkern_fn(x, weight, bias, residual):
        return bigkern.ops.conv2d(x, weight, bias, stride, padding, 1, groups, activation=activation, residual=residual)

    def torch_fn(x, weight, bias, residual):
        y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if activation == "relu" else y

    def cudnn_benchmark():
        return torch.backends.cudnn.flags(enabled=True, benchmark=True) if device.type == "cuda" else contextlib.nullcontext()

    result = bigkern_providers(case, device, bigkern_fn)
    result.append(Provider.of("torch", torch_fn, context=cudnn_benchmark))
    if compile:
        result += compile_providers(torch_fn, device)
    return result
