"""The narrower builds of the CPU convolution kernels, forced with BIGKERN_CPU_ISA, and the
AVX-512 kernels without AMX (BIGKERN_CPU_AMX=0).

The process picks its kernel table once (the widest its processor runs: AVX-512 with AMX on the
development and CI machines, which test_conv.py exercises), so the CPU cases of test_conv.py run
again in a child pytest for each narrower build: AVX-512 without the tiles (the forward of layers
with 16+ channels per group otherwise runs on AMX), AVX2 (a different register tile: 6 x 2 vectors
instead of 6 x 4) and the portable baseline. Each child is first checked to get the build asked for."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512-without-amx"])
def test_narrower_conv_kernels_pass_the_cpu_cases(isa):
    env = dict(os.environ, BIGKERN_CPU_ISA=isa.split("-")[0], BIGKERN_CPU_AMX="0")
    probe = subprocess.run(
        [sys.executable, "-c", "import bigkern._C as C; print(C.cpu_isa(), C.cpu_amx())"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    got, amx = probe.stdout.split()
    if isa == "avx2" and got == "baseline":
        pytest.skip("this processor has no AVX2 with FMA")
    if isa == "avx512-without-amx" and got != "avx512":
        pytest.skip("this processor has no AVX-512")
    assert got == isa.split("-")[0] and amx == "False", probe.stdout
    selection = "cpu or gradcheck or backward_op"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/test_conv.py", "-k", selection],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
