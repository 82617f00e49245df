"""The portable (non-AVX2) CPU pooling kernels, forced with BIGKERN_CPU_ISA=baseline.

The process picks its kernel table once, so this runs the parity checks of test_pool.py's
CPU backend in a child process.
"""

import os
import subprocess
import sys

import pytest

CHILD = r"""
import bigkern._C as C, torch, torch.nn.functional as F, bigkern
assert C.cpu_isa() == "baseline", C.cpu_isa()
torch.manual_seed(0)
for fmt in (torch.contiguous_format, torch.channels_last):
    for c in (5, 40, 64):  # 40 and 64 use full channel blocks plus a remainder / exactly full blocks
        x = torch.randn(2, c, 13, 11).contiguous(memory_format=fmt)
        x[0, 1, 2, 3] = float("nan")
        for kw in ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": (2, 3), "dilation": (2, 1), "ceil_mode": True}):
            o, i = bigkern.ops.max_pool2d(x, return_indices=True, **kw)
            r, ri = F.max_pool2d(x, return_indices=True, **kw)
            assert torch.equal(o.nan_to_num(), r.nan_to_num()) and torch.equal(i, ri), ("max", fmt, c, kw)
        for kw in ({"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, {"kernel_size": 2}):
            torch.testing.assert_close(bigkern.ops.avg_pool2d(x, **kw), F.avg_pool2d(x, **kw), equal_nan=True)
        for size in ((4, 3), (13, 11), (20, 5)):
            torch.testing.assert_close(bigkern.ops.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size), equal_nan=True)
            o, i = bigkern.ops.adaptive_max_pool2d(x, size, return_indices=True)
            r, ri = F.adaptive_max_pool2d(x, size, return_indices=True)
            assert torch.equal(o.nan_to_num(), r.nan_to_num()) and torch.equal(i, ri), ("adaptive max", fmt, c, size)
print("ok")
"""


def run_child(isa):
    env = dict(os.environ, BIGKERN_CPU_ISA=isa)
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)


def test_baseline_kernels_match_torch():
    result = run_child("baseline")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_unknown_isa_is_a_clear_error():
    result = run_child("sse9")
    assert result.returncode == 1  # a Python exception, not a crash
    assert "RuntimeError: BIGKERN_CPU_ISA=sse9 is not supported; it takes baseline, avx2 or avx512" in result.stderr
