"""The CUDA attention forward kernels, run on the CPU (tests/cuda_host/attention_forward).

emulate_forward.cpp compiles the forward, split-KV and combine kernels as host C++ against the
SIMT emulator of tests/cuda_host/emulation and compares out and lse with a float64 reference
over every head-dim bucket, both dtypes, GQA, causal modes, masks, dropout, strided inputs,
padding, rows that see no key and the split-KV path; each case twice, under different thread
schedules and cp.async timings, bitwise equal. Needs only g++; no GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FLAGS = ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]


def test_forward_kernels_emulated(tmp_path):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    binary = tmp_path / "emulate_forward"
    includes = [f"-I{HERE / 'emulation'}", f"-I{ROOT / 'csrc'}"]
    command = [compiler, *FLAGS, *includes, str(HERE / "attention_forward" / "emulate_forward.cpp"), "-o", str(binary)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(binary), "2024"], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0 and "all cases passed" in ran.stdout, ran.stdout + ran.stderr
