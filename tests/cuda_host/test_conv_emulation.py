"""The CUDA convolution kernels, run on the CPU (tests/cuda_host/conv).

emulate_conv.cpp compiles csrc/cuda/conv/conv_simt.cuh and conv_mma.cuh (the SIMT implicit GEMMs
for every dtype, the tensor-core forward with its cp.async pipeline, the depthwise kernel, dgrad,
wgrad and the pointwise backward kernels) as host C++ against the SIMT emulator, with the layouts
conv.cpp prepares, and writes the results back; they are compared here with torch in float64.
The tensor-core kernel runs under both cp.async timings (copies landing at issue, or only at the
wait), so a missing wait or barrier shows up. Needs only g++.

Accuracy: float32/float64 close to the float64 reference; float16/bfloat16 at most 2x the error of
the same computation rounded like torch's (inputs in the dtype, float32 accumulation, the output
rounded to the dtype), plus a few ulps.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FLAGS = ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
PATHS = {"simt": 0, "mma": 1, "depthwise": 2}
ULP = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    out = tmp_path_factory.mktemp("conv_emulation") / "emulate_conv"
    includes = [f"-I{HERE / 'emulation'}", f"-I{ROOT / 'csrc'}"]
    built = subprocess.run([compiler, *FLAGS, *includes, str(HERE / "conv" / "emulate_conv.cpp"), "-o", str(out)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    return out


CASES = [  # (N, C, H, W, K, R, S, stride, padding t/l/b/r, dilation, groups), dtype, activation, bias, residual, path
    ((2, 5, 7, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), torch.float32, 1, True, True, "simt"),
    ((2, 6, 7, 7, 4, 3, 2, (2, 1), (1, 0, 2, 1), (1, 2), 2), torch.float32, 3, True, False, "simt"),
    ((1, 3, 9, 8, 70, 5, 5, (2, 2), (2, 2, 2, 2), (1, 1), 1), torch.float32, 2, False, True, "simt"),  # few channels, > 1 tile
    ((2, 5, 6, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), torch.float64, 2, True, True, "simt"),
    ((2, 5, 6, 6, 6, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), torch.bfloat16, 1, True, False, "simt"),
    ((2, 16, 6, 5, 24, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1), torch.float16, 1, True, True, "mma"),
    ((1, 40, 5, 6, 72, 3, 3, (2, 1), (1, 1, 0, 1), (1, 1), 1), torch.bfloat16, 3, True, False, "mma"),  # 2 chunks, tail
    ((2, 32, 4, 5, 16, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2), torch.float16, 0, False, False, "mma"),  # 1x1, groups
    ((2, 12, 6, 7, 12, 3, 3, (1, 2), (1, 1, 1, 1), (2, 1), 12), torch.float32, 1, True, True, "depthwise"),
    ((1, 8, 5, 5, 8, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 8), torch.bfloat16, 2, True, False, "depthwise"),
]


def _ids(case):
    geometry, dtype, activation, bias, residual, path = case
    return f"{path}-{str(dtype).removeprefix('torch.')}-c{geometry[1]}k{geometry[4]}-{geometry[5]}x{geometry[6]}-act{activation}"


def _write(directory: Path, name: str, t: torch.Tensor) -> None:
    t.detach().float().contiguous().numpy().tofile(directory / name)


def _read(directory: Path, name: str, shape) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(directory / name, dtype=np.float32).reshape(shape)).double()


def _reference(x, weight, bias, residual, grad, geometry, activation, dtype=None):
    """torch's forward and gradients; in float64, or rounded like torch's low-precision conv."""
    _, _, _, _, _, _, _, stride, (top, left, bottom, right), dilation, groups = geometry
    cast = (lambda t: t.to(dtype).float()) if dtype is not None else (lambda t: t.double())  # noqa: E731
    leaves = [None if t is None else cast(t).requires_grad_() for t in (x, weight, bias)]
    z = F.conv2d(F.pad(leaves[0], (left, right, top, bottom)), leaves[1], leaves[2], stride, 0, dilation, groups)
    if residual is not None:
        z = z + cast(residual)
    out = {0: z, 1: torch.relu(z), 2: F.gelu(z), 3: F.silu(z)}[activation]
    wanted = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(out, wanted + [z], cast(grad))
    results = {"out": out, "pre": z, "grad_input": grads[0], "grad_weight": grads[1], "grad_pre": grads[-1]}
    if bias is not None:
        results["grad_bias"] = grads[2]
    if dtype is not None:  # torch stores its results in the dtype
        results = {k: v.to(dtype).double() for k, v in results.items()}
    return {k: v.detach().double() for k, v in results.items()}


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_conv_kernels_match_reference(binary, case, tmp_path):
    geometry, dtype, activation, with_bias, with_residual, path = case
    n, c, h, w, k, r, s, stride, padding, dilation, groups = geometry
    gen = torch.Generator().manual_seed(sum(geometry[:7]))
    rounded = lambda t: t.to(dtype).double()  # noqa: E731  (the kernels see dtype-rounded operands)
    x = rounded(torch.randn(n, c, h, w, generator=gen))
    weight = rounded(torch.randn(k, c // groups, r, s, generator=gen) * 0.5)
    bias = rounded(torch.randn(k, generator=gen)) if with_bias else None
    top, left, bottom, right = padding
    p = (h + top + bottom - dilation[0] * (r - 1) - 1) // stride[0] + 1
    q = (w + left + right - dilation[1] * (s - 1) - 1) // stride[1] + 1
    out_shape = (n, k, p, q)
    residual = rounded(torch.randn(out_shape, generator=gen)) if with_residual else None
    grad = rounded(torch.randn(out_shape, generator=gen))
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("residual", residual), ("grad", grad)):
        if t is not None:
            _write(tmp_path, name, t)
    fields = [n, c, h, w, k, r, s, *stride, top, left, bottom, right, *dilation, groups, DTYPES[dtype], activation,
              int(with_bias), int(with_residual), PATHS[path]]  # fmt: skip
    (tmp_path / "problem.txt").write_text(" ".join(str(v) for v in fields))
    run = subprocess.run([str(binary), str(tmp_path), "7"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    ref = _reference(x, weight, bias, residual, grad, geometry, activation)
    low = None if dtype in (torch.float32, torch.float64) else _reference(x, weight, bias, residual, grad, geometry, activation, dtype)
    shapes = {"out": out_shape, "pre": out_shape, "grad_input": x.shape, "grad_weight": weight.shape, "grad_pre": out_shape}
    if with_bias:
        shapes["grad_bias"] = (k,)
    names = [name for name in shapes if name != "pre" or activation in (2, 3)]
    if activation == 0:
        names.remove("grad_pre")
    for name in names:
        ours = _read(tmp_path, name, shapes[name])
        assert torch.isfinite(ours).all(), f"{name}: non-finite values"
        err = (ours - ref[name]).abs().max().item()
        scale = max(ref[name].abs().max().item(), 1.0)
        if low is None:
            bound = 2e-5 * scale  # float64 too: results travel back as float32 files
        else:
            bound = 2 * (low[name] - ref[name]).abs().max().item() + 8 * ULP[dtype] * scale
        assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g}"
