"""The CPU checks of the CUDA attention kernels' index math (tests/cuda_host/attention_host_checks.cu).

The fragment layouts, ldmatrix addressing, split-KV planning, tile table and visibility logic
are plain functions; this compiles the checks as host code and runs them, so they guard the
CUDA kernels on machines without a GPU. Compiled with g++ (the plain-C++ headers, with
-Werror) and, when a CUDA toolkit is found, with nvcc (adding the __host__ __device__ helpers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("attention_host_checks.cu")


def _nvcc() -> str | None:
    versioned = sorted(Path("/usr/local").glob("cuda-*"), reverse=True)
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda", *versioned]
    for root in candidates:
        if root and (Path(root) / "bin" / "nvcc").exists():
            return str(Path(root) / "bin" / "nvcc")
    return None


def _compile_and_run(command: list[str], binary: Path) -> None:
    built = subprocess.run(command + ["-o", str(binary)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "all attention host checks passed" in ran.stdout


def test_plain_cpp_checks(tmp_path):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    command = [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'csrc'}", "-x", "c++", str(SOURCE)]
    _compile_and_run(command, tmp_path / "checks_gpp")


def test_host_device_checks(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no CUDA toolkit")
    _compile_and_run([nvcc, "-std=c++17", f"-I{ROOT / 'csrc'}", str(SOURCE)], tmp_path / "checks_nvcc")
