"""The pooling suite: max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d.

Cases (``cases``):
    ops        max_pool2d 3x3 s2 p1 (the ResNet stem) and 2x2 s2; avg_pool2d 3x3 s2 p1;
               adaptive_avg_pool2d to 7x7 and to 1x1 (global pooling); adaptive_max_pool2d to 7x7
    layouts    nchw and channels_last
    directions forward (inference, under torch.no_grad()) and forward+backward (input with
               requires_grad, then the backward of the output with a fixed random grad_output)
    CPU        float32 at (16, 64, 112, 112), both directions -- the forward at this shape is the
               project's acceptance benchmark: bigkern's CPU forward against torch's forward;
               --quick: (8, 64, 56, 56)
    CUDA       float32, float16, bfloat16 at (64, 64, 112, 112) and (32, 256, 56, 56);
               --quick: (16, 64, 112, 112)

Providers (``providers``): bigkern-cpu / bigkern-cuda / bigkern-triton (``bigkern.ops.<op>``
under ``bigkern.use_backend``), torch (``torch.nn.functional.<op>``), and torch.compile of the
torch function when asked for.

Bytes model (GB/s = bytes / median time), with N*C*H*W input elements, N*C*OH*OW output
elements, E bytes per element of the dtype and 8 bytes per int64 index:

    forward            N*C*H*W*E (input read once) + N*C*OH*OW*E (output written once)
                       + N*C*OH*OW*8 if the provider writes an index tensor
    forward+backward   the forward (with indices written, for the max ops)
                       + N*C*OH*OW*E (grad_output read) + N*C*H*W*E (grad_input written)
                       + N*C*OH*OW*8 (indices read, max ops)

Who writes indices: in a forward under no_grad, bigkern writes none (it computes indices only
when asked for them or when autograd needs them), while torch's max_pool2d and
adaptive_max_pool2d always do (aten::max_pool2d_with_indices / aten::adaptive_max_pool2d);
torch.compile's Inductor drops the unused indices. In forward+backward every provider of a max
op is counted with int64 indices (Inductor may keep smaller offsets instead). avg ops have no
indices. Each case lists the providers counted with indices in ``params["indices_written_by"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import bigkern
from bigkern.bench.harness import (
    DIRECTIONS,
    Case,
    Inputs,
    Provider,
    bigkern_providers,
    compile_providers,
    input_generators,
    make_tensor,
)
from bigkern.ops.pool import pooled_size

INDEX_BYTES = 8  # int64

#: Every provider name this suite can produce.
PROVIDERS = ("bigkern-cpu", "bigkern-cuda", "bigkern-triton", "torch", "torch.compile")

LAYOUTS = ("nchw", "channels_last")
CPU_SHAPES = [(16, 64, 112, 112)]  # the acceptance benchmark (forward); forward+backward too
CPU_QUICK_SHAPES = [(8, 64, 56, 56)]
CUDA_SHAPES = [(64, 64, 112, 112), (32, 256, 56, 56)]
CUDA_QUICK_SHAPES = [(16, 64, 112, 112)]
CPU_DTYPES = [torch.float32]
CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@dataclass(frozen=True)
class PoolOp:
    """One pooling configuration: the op, its arguments after the input, and how to label it."""

    op: str
    args: tuple
    window: bool  # kernel/stride/padding op (else adaptive, args = (output_size,))
    max: bool  # has indices

    @property
    def label(self) -> str:
        return f"{self.op}({','.join(str(a) for a in self.args)})"

    @property
    def params(self) -> dict:
        if self.window:
            kernel = self.args[0]
            stride = self.args[1] if len(self.args) > 1 else kernel
            padding = self.args[2] if len(self.args) > 2 else 0
            return {"kernel_size": kernel, "stride": stride, "padding": padding}
        return {"output_size": self.args[0]}

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        p = self.params
        if self.window:
            k, s, pad = p["kernel_size"], p["stride"], p["padding"]
            return pooled_size(h, k, pad, s, 1, False), pooled_size(w, k, pad, s, 1, False)
        size = p["output_size"]
        return (size, size) if isinstance(size, int) else tuple(size)

    def bigkern_fn(self):
        op, args = getattr(bigkern.ops, self.op), self.args
        return lambda x: op(x, *args)

    def torch_fn(self):
        op, args = getattr(F, self.op), self.args
        return lambda x: op(x, *args)


POOL_OPS = [
    PoolOp("max_pool2d", (3, 2, 1), window=True, max=True),
    PoolOp("max_pool2d", (2, 2), window=True, max=True),
    PoolOp("avg_pool2d", (3, 2, 1), window=True, max=False),
    PoolOp("adaptive_avg_pool2d", (7,), window=False, max=False),
    PoolOp("adaptive_avg_pool2d", (1,), window=False, max=False),
    PoolOp("adaptive_max_pool2d", (7,), window=False, max=True),
]


def indices_written_by(pool_op: PoolOp, direction: str) -> list[str]:
    """The providers counted as writing an int64 index tensor (see the module docstring)."""
    if not pool_op.max:
        return []
    if direction == "forward+backward":
        return list(PROVIDERS)
    return ["torch"]


def pool_bytes(pool_op: PoolOp, shape, dtype: torch.dtype, direction: str, writes_indices: bool) -> int:
    """Bytes one call moves, by the formula in the module docstring."""
    n, c, h, w = shape
    oh, ow = pool_op.output_hw(h, w)
    elem = torch.empty(0, dtype=dtype).element_size()
    inp, out = n * c * h * w * elem, n * c * oh * ow * elem
    idx = n * c * oh * ow * INDEX_BYTES if writes_indices else 0
    total = inp + out + idx  # forward: input read, output (+ indices) written
    if direction == "forward+backward":
        total += out + inp + idx  # grad_output read, grad_input written (+ indices read)
    return total


def make_case(pool_op: PoolOp, shape, dtype: torch.dtype, layout: str, direction: str, seed: int = 0) -> Case:
    shape = tuple(shape)
    oh, ow = pool_op.output_hw(shape[2], shape[3])
    writers = indices_written_by(pool_op, direction)
    generators = input_generators(seed)

    def make_inputs(device) -> Inputs:
        device = torch.device(device)
        gen = generators(device)
        backward = direction == "forward+backward"
        x = make_tensor(shape, dtype, device, layout, requires_grad=backward, generator=gen)
        grad = make_tensor((shape[0], shape[1], oh, ow), dtype, device, layout, generator=gen) if backward else None
        return Inputs((x,), grad)

    params = dict(pool_op.params)
    params["indices_written_by"] = writers
    return Case(
        op=pool_op.op,
        shape=shape,
        dtype=dtype,
        layout=layout,
        direction=direction,
        params=params,
        make_inputs=make_inputs,
        bytes_moved=lambda provider: pool_bytes(pool_op, shape, dtype, direction, provider in writers),
        label=pool_op.label,
    )


def _shapes(device: torch.device, quick: bool) -> list[tuple]:
    if device.type == "cuda":
        return CUDA_QUICK_SHAPES if quick else CUDA_SHAPES
    return CPU_QUICK_SHAPES if quick else CPU_SHAPES


def cases(device, dtypes=None, quick: bool = False) -> list[Case]:
    """Every pooling case for ``device`` (see the module docstring)."""
    device = torch.device(device)
    dtypes = list(dtypes) if dtypes else (CUDA_DTYPES if device.type == "cuda" else CPU_DTYPES)
    result = []
    for direction in DIRECTIONS:
        for shape in _shapes(device, quick):
            for dtype in dtypes:
                for pool_op in POOL_OPS:
                    for layout in LAYOUTS:
                        result.append(make_case(pool_op, shape, dtype, layout, direction, seed=len(result) * 1000))
    return result


def _pool_op_of(case: Case) -> PoolOp:
    for pool_op in POOL_OPS:
        if pool_op.label == case.label:
            return pool_op
    raise ValueError(f"{case.id} is not a case of the pool suite")


def providers(case: Case, device, *, compile: bool = False) -> list[Provider]:
    """bigkern's backends for ``device``, torch eager, and torch.compile when ``compile``."""
    pool_op = _pool_op_of(case)
    result = bigkern_providers(case, torch.device(device), pool_op.bigkern_fn())
    result.append(Provider.of("torch", pool_op.torch_fn()))
    if compile:
        result += compile_providers(pool_op.torch_fn(), device)
    return result
