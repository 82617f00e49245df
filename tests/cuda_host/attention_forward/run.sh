#!/bin/bash
# Builds and runs the CUDA attention forward kernels on the CPU under the SIMT emulator (no GPU
# needed) against a float64 reference.
# Usage: tests/cuda_host/attention_forward/run.sh [seed [case-name-substring]]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${TMPDIR:-/tmp}/bigkern-cuda-host
mkdir -p "$out"
flags=(-std=c++20 -O2 -Wall -Wextra -Werror -Wno-unused-parameter)
g++ "${flags[@]}" -I"$root/tests/cuda_host/emulation" -I"$root/csrc" "$here/emulate_forward.cpp" -o "$out/emulate_forward"
"$out/emulate_forward" "$@"
