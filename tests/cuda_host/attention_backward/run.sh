#!/bin/bash
# Builds and runs the CPU checks of the CUDA attention backward (no GPU needed):
#   check_backward_fragments: the transposed-A ldmatrix addressing against the PTX tables;
#   emulate_backward: the kernels under the SIMT emulator vs a float64 reference.
# Usage: tests/cuda_host/attention_backward/run.sh [seed [case-name-substring]]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${TMPDIR:-/tmp}/bigkern-cuda-host
mkdir -p "$out"
flags=(-std=c++20 -O2 -Wall -Wextra -Werror -Wno-unused-parameter)
g++ "${flags[@]}" -I"$root/csrc" "$here/check_backward_fragments.cpp" -o "$out/check_backward_fragments"
"$out/check_backward_fragments"
g++ "${flags[@]}" -I"$root/tests/cuda_host/emulation" -I"$root/csrc" "$here/emulate_backward.cpp" -o "$out/emulate_backward"
"$out/emulate_backward" "$@"
