"""The CUDA recurrent step kernels, run on the CPU (tests/cuda_host/rnn).

emulate_rnn.cpp compiles csrc/cuda/rnn/rnn_kernels.cuh (the fused step forward, on tensor cores for
float16/bfloat16 layers, the cell, and the pointwise backward; their step functions are also the
body of the persistent kernel) as host C++ against the
SIMT emulator, runs the per-step host loop of csrc/cuda/rnn/rnn.cpp on the problem this test
writes, and the results are compared here with bigkern/reference/rnn.py in float64. The
persistent kernel's grid-wide barrier cannot be emulated (blocks run one after another), so its
launch itself is checked only on a GPU (tests/ops/test_rnn.py's cuda cases). Needs only g++.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bigkern.reference import rnn as reference

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FLAGS = ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    out = tmp_path_factory.mktemp("rnn_emulation") / "emulate_rnn"
    includes = [f"-I{HERE / 'emulation'}", f"-I{ROOT / 'csrc'}"]
    built = subprocess.run([compiler, *FLAGS, *includes, str(HERE / "rnn" / "emulate_rnn.cpp"), "-o", str(out)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr
    return out


def _write(directory: Path, name: str, t: torch.Tensor) -> None:
    t.detach().float().contiguous().numpy().tofile(directory / name)


def _read(directory: Path, name: str, shape) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(directory / name, dtype=np.float32).reshape(shape)).double()


CASES = [  # mode, cell, lengths (batch = len), hidden, reverse, bias, dtype
    (0, False, [5, 4, 4, 2, 1], 13, False, True, torch.float32),
    (0, False, [4, 4, 3], 9, True, False, torch.float32),
    (1, False, [5, 3, 3, 1], 11, False, True, torch.float32),
    (1, False, [3, 2], 17, True, True, torch.float32),
    (2, False, [4, 4, 1], 10, True, True, torch.float32),
    (3, False, [5, 2, 2], 12, False, True, torch.float32),
    (0, True, [1, 1, 1], 13, False, True, torch.float32),
    (1, True, [1, 1, 1, 1], 11, False, True, torch.float32),
    (3, True, [1, 1], 6, False, False, torch.float32),
    # float16 / bfloat16 layers: the tensor-core path (several m-tiles, padded units, > 64 rows)
    (0, False, [4, 3, 1], 12, False, True, torch.bfloat16),
    (1, False, [4, 4, 2], 12, True, True, torch.float16),
    (0, False, [3] * 12 + [2] * 9, 13, True, True, torch.float16),
    (1, False, [2] * 19, 9, False, False, torch.bfloat16),
    (3, False, [2] * 70, 5, False, True, torch.bfloat16),
    (2, False, [3, 3, 1], 24, True, True, torch.float16),
    (0, True, [1, 1, 1], 13, False, True, torch.bfloat16),
]


@pytest.mark.parametrize("mode,cell,lengths,hidden,reverse,bias,dtype", CASES)
def test_cuda_step_kernels_emulated(binary, tmp_path, mode, cell, lengths, hidden, reverse, bias, dtype):
    torch.manual_seed(hash((mode, cell, hidden, reverse)) % 2**31)
    gates, batch, input_size = reference.GATES[mode], len(lengths), 7
    steps = max(lengths)
    batch_sizes = torch.tensor([sum(1 for n in lengths if n > t) for t in range(steps)]) if not cell else torch.tensor([batch])
    rows = int(batch_sizes.sum())

    def rnd(*shape):  # values representable in the dtype, so kernel and reference see the same inputs
        return (torch.rand(*shape, dtype=torch.float64) * 1.6 - 0.8).to(dtype).double()

    t = {"w_hh": rnd(gates * hidden, hidden), "hx": rnd(batch, hidden), "grad_output": rnd(rows, hidden)}
    if mode == 0:
        t["cx"], t["grad_cy"] = rnd(batch, hidden), rnd(batch, hidden)
    if bias:
        t["b_hh"] = rnd(gates * hidden)
    if cell:
        t.update(input=rnd(batch, input_size), w_ih=rnd(gates * hidden, input_size))
        if bias:
            t["b_ih"] = rnd(gates * hidden)
    else:
        t.update(x_proj=rnd(rows, gates * hidden), grad_hy=rnd(batch, hidden))
    for name, value in t.items():
        _write(tmp_path, name, value)
    sizes = " ".join(str(int(s)) for s in batch_sizes)
    (tmp_path / "problem.txt").write_text(
        f"{mode} {batch} {hidden} {input_size} {int(cell)} {int(reverse)} {int(bias)} {DTYPES[dtype]} {len(batch_sizes)} {sizes}\n"
    )
    ran = subprocess.run([str(binary), str(tmp_path), "7"], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0 and "done" in ran.stdout, ran.stdout + ran.stderr

    width = reference.workspace_width(mode, hidden)
    output, ws = _read(tmp_path, "output", (rows, hidden)), _read(tmp_path, "ws", (rows, width))
    # Outputs the kernel rounds to the tensors' dtype; everything it keeps in float32 at 1e-5.
    out_tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    acc_tol = {"rtol": 1e-5, "atol": 1e-5}
    if cell:
        hy, cy, ref_ws = reference.rnn_cell_forward(mode, t["input"], t["hx"], t.get("cx"), t["w_ih"], t["w_hh"],
                                                    t.get("b_ih"), t.get("b_hh"), True)  # fmt: skip
        torch.testing.assert_close(output, hy, **out_tol)
    else:
        # float16/bfloat16 layers run on tensor cores, which round h to the dtype for the product.
        operand = None if dtype == torch.float32 else dtype
        ref_out, hy, cy, ref_ws = reference.rnn_layer_forward(mode, t["x_proj"], batch_sizes, t["hx"], t.get("cx"),
                                                              t["w_hh"], t.get("b_hh"), None, reverse, True,
                                                              operand_dtype=operand)  # fmt: skip
        torch.testing.assert_close(output, ref_out, **out_tol)
        torch.testing.assert_close(_read(tmp_path, "hy", (batch, hidden)), hy, **acc_tol)
    torch.testing.assert_close(ws, ref_ws, **acc_tol)
    if mode == 0:
        torch.testing.assert_close(_read(tmp_path, "cy", (batch, hidden)), cy, **acc_tol)

    grad_x = _read(tmp_path, "grad_x", (rows, gates * hidden))
    d_rec = _read(tmp_path, "d_rec", (rows, gates * hidden))
    if cell:
        expected = reference.rnn_cell_backward(mode, t["grad_output"], t.get("grad_cy"), t["input"], t["hx"], t.get("cx"),
                                               t["w_ih"], t["w_hh"], ref_ws, True)  # fmt: skip
        torch.testing.assert_close(grad_x @ t["w_ih"], expected[0], **out_tol)
        torch.testing.assert_close(d_rec.t() @ t["hx"], expected[4], **out_tol)
        torch.testing.assert_close(_read(tmp_path, "grad_hx", (batch, hidden)), expected[1], **acc_tol)
    else:
        # The reference runs from the kernel's own forward results, so the backward is checked alone.
        expected = reference.rnn_layer_backward(mode, t["grad_output"], t["grad_hy"], t.get("grad_cy"), batch_sizes, t["hx"],
                                                t.get("cx"), t["w_hh"], t.get("b_hh"), None, output, ws, reverse)  # fmt: skip
        torch.testing.assert_close(grad_x, expected[0], **out_tol)
        torch.testing.assert_close(_read(tmp_path, "grad_hx", (batch, hidden)), expected[1], **acc_tol)
        if bias:
            torch.testing.assert_close(d_rec.sum(0), expected[4], **acc_tol)
    if mode == 0:
        expected_cx = expected[2]
        torch.testing.assert_close(_read(tmp_path, "grad_cx", (batch, hidden)), expected_cx, **acc_tol)
