"""The portable (non-AVX2) CPU convolution kernels, forced with BIGKERN_CPU_ISA=baseline.

The process picks its kernel table once, so the CPU cases of test_conv.py run again in a child
pytest with the variable set (the child process is checked to get the portable build)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_baseline_conv_kernels_pass_the_cpu_cases():
    env = dict(os.environ, BIGKERN_CPU_ISA="baseline")
    check = "import bigkern._C as C; assert C.cpu_isa() == 'baseline', C.cpu_isa()"
    isa = subprocess.run([sys.executable, "-c", check], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert isa.returncode == 0, isa.stderr[-2000:]
    selection = "cpu or gradcheck or backward_op"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops/test_conv.py", "-k", selection],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
