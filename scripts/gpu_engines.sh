#!/usr/bin/env bash
# Every engine x dtype once on synthetic FLUX.1-dev at 1024x1024 (4 steps, 1 warm-up + 1 timed image),
# for the engine table. Usage: OUT=dir bash scripts/gpu_engines.sh "engine=a,b" "dtype=x,y" [overrides...]
# Combinations outside an engine's dtype vocabulary are skipped by the sweep.
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)
OUT=${OUT:-outputs/gpu_engines}
mkdir -p "$OUT"
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)} HARNESS_STORE=${HARNESS_STORE:-$OUT/results.sqlite} HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache} PYTHONUNBUFFERED=1
"$PYTHON" -m harness -m model=flux-dev workload=quick workload.steps=4 run.timeout_s=${CELL_TIMEOUT:-240} \
  metrics.save_images=false hydra.sweep.dir="$HARNESS_CACHE/multirun/\${now:%H%M%S}" "$@" 2>&1 \
  | grep -E "^\[|^skip|rror" | tee -a "$OUT/cells.txt"
"$PYTHON" -m reports --store "$HARNESS_STORE" --out "$OUT" >/dev/null && cat "$OUT/leaderboard.md"
