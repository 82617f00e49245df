#!/usr/bin/env bash
# One command for a GPU machine: build bigkern from source against the installed torch, run the
# whole test suite (CUDA tests included, Triton on the GPU), and run the benchmarks.
#
#   scripts/gpu_check.sh OUTDIR
#
# Writes into OUTDIR: build.log, info.txt, pytest.log, bench.log, and the benchmark results
# <device>-<date>.json/.csv of `bigkern bench all --quick` (copy those into benchmarks/results/
# and commit them).
# Compiles only for the architecture of the GPU present, to keep the lease short.
set -uo pipefail
out="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
unset TRITON_INTERPRET

arch=$("$PY" -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')") || {
  echo "no CUDA GPU visible to torch" | tee "$out/build.log"; exit 1; }
nvidia-smi > "$out/info.txt" 2>&1

echo "== build for sm_${arch/./} with $("$PY" -c 'import torch; print(torch.__version__)')" | tee "$out/build.log"
start=$(date +%s)
BIGKERN_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PY" setup.py build_ext --inplace >> "$out/build.log" 2>&1 || { echo "build failed"; tail -40 "$out/build.log"; exit 1; }
echo "build took $(( $(date +%s) - start )) s" | tee -a "$out/build.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -m bigkern info >> "$out/info.txt" 2>&1

echo "== tests"
"$PY" -m pytest -q -p no:cacheprovider --maxfail=30 2>&1 | tee "$out/pytest.log" | tail -30
tests_status=${PIPESTATUS[0]}

echo "== benchmarks"
"$PY" -m bigkern bench all --device cuda --quick --no-progress --out "$out" 2>&1 | tee "$out/bench.log" | tail -60
bench_status=${PIPESTATUS[0]}

echo "tests exit $tests_status, bench exit $bench_status"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
