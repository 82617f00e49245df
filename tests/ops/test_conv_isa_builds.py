"""The narrower builds of the CPU convolution kernels, forced with BIGKERN_CPU_ISA.

The process picks its kernel table once (the widest its processor runs: AVX-512 on the
development and CI machines, which test_conv.py exercises), so the CPU cases of test_conv.py run
again in a child pytest for each narrower build: AVX2 (a different register tile: 6 x 2 vectors
instead of 6 x 4) and the portable baseline. Each child is first checked to get the build asked for."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_narrower_conv_kernels_pass_the_cpu_cases(isa):
    env = dict(os.environ, BIGKERN_CPU_ISA=isa)
    probe = subprocess.run(
        [sys.executable, "-c", "import bigkern._C as C; print(C.cpu_isa())"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    if isa == "avx2" and probe.stdout.strip() == "baseline":
        pytest.skip("this processor has no AVX2 with FMA")
    assert probe.stdout.strip() == isa, probe.stdout
    selection = "cpu or gradcheck or backward_op"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/test_conv.py", "-k", selection],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
