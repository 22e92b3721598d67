#!/usr/bin/env bash
# Verification run on a GPU machine (the lent H200): GPU tests, then full-size synthetic FLUX.1-dev
# cells (BF16 and torchao int8, 1024x1024), a tameness check of the full-size denoiser, and a leaderboard.
# Usage: OUT=/some/dir bash scripts/gpu_check.sh   (files land in $OUT; the last lines are a summary)
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export HARNESS_STORE="$OUT/results.sqlite" HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
"$PYTHON" -m pytest -q -m gpu tests/gpu > "$OUT/pytest_gpu.txt" 2>&1; tail -5 "$OUT/pytest_gpu.txt"
"$PYTHON" scripts/check_tame.py 2>&1 | tail -3 | tee "$OUT/tame.txt"
for engine in "engine=bf16" "engine=torchao dtype=int8"; do
  "$PYTHON" -m harness model=flux-dev workload=quick $engine hydra.run.dir="$HARNESS_CACHE/runs/\${now:%H%M%S}" \
    2>&1 | grep -v -E "register_constant|W[0-9]{4} " | tee -a "$OUT/cells.txt"
done
"$PYTHON" -m reports --store "$HARNESS_STORE" --out "$OUT" && cat "$OUT/leaderboard.md"
