"""The CUDA attention backward kernels, run on the CPU (tests/cuda_host/attention_backward).

check_backward_fragments.cpp checks the backward's own index math (the transposed-A ldmatrix
addressing against the PTX tables, the warp arrangements and shared-memory figures of the tile
table). emulate_backward.cpp compiles the kernels themselves as host C++ against the SIMT
emulator of tests/cuda_host/emulation and compares their gradients with a float64 reference
over every head-dim bucket, both dtypes, GQA, causal modes, masks, dropout, strided inputs and
padding, on the atomic and the deterministic path (the latter also bitwise across schedules).
Both need only g++; no GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FLAGS = ["-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]


def _build(tmp_path: Path, source: str, includes: list[Path]) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    binary = tmp_path / Path(source).stem
    command = [compiler, *FLAGS, *(f"-I{p}" for p in includes), str(HERE / "attention_backward" / source), "-o", str(binary)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    return binary


def test_backward_fragments_and_tiles(tmp_path):
    ran = subprocess.run([str(_build(tmp_path, "check_backward_fragments.cpp", [ROOT / "csrc"]))],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "checks passed" in ran.stdout, ran.stdout + ran.stderr


@pytest.mark.slow
def test_backward_kernels_emulated(tmp_path):
    binary = _build(tmp_path, "emulate_backward.cpp", [HERE / "emulation", ROOT / "csrc"])
    ran = subprocess.run([str(binary), "2024"], capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0 and "all cases passed" in ran.stdout, ran.stdout + ran.stderr
