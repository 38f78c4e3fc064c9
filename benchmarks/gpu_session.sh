#!/usr/bin/env bash
# What was run on the NVIDIA machine for the CUDA figures (README, benchmarks/results/*_cuda.md).
#
# Usage (repo root, on a machine with CUDA, torch and numba already installed):
#   NEXTSTAT_WORKSPACES=/path/to/workspaces OUT=/tmp/out bash benchmarks/gpu_session.sh [STEP ...]
# STEP: env, tests, toys, torch, profile (default: all). Logs go to $OUT (default ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
steps=${*:-env tests toys torch}
for step in $steps; do
  case $step in
    env)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/env.log"
      python3 -c "import sys, torch, numba, numpy, scipy; print(sys.version); print('torch', torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0)); print('numba', numba.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)" 2>&1 | tee -a "$OUT/env.log"
      ;;
    tests)
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/torch tests/test_toys.py -k "not ray" 2>&1 | tee "$OUT/tests.log" | tail -25
      ;;
    toys)
      timeout 240 python3 benchmarks/bench_toys.py --device cuda --repeat 2 --output-dir "$OUT" 2>&1 | tee "$OUT/toys.log" | tail -30
      ;;
    torch)
      timeout 180 python3 benchmarks/bench_torch.py --device cuda --output-dir "$OUT" 2>&1 | tee "$OUT/torch.log" | tail -30
      ;;
    profile)
      timeout 150 python3 benchmarks/profile_gpu_toys.py 2>&1 | tee "$OUT/profile.log" | tail -40
      ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
