#!/usr/bin/env bash
# The error matrix (+experiment=matrix) on a GPU host, several cells per GPU at once: the matrix answers
# "does it run", so cells may share a GPU. Each cell is capped at 0.92/SLOTS of its card
# (run.gpu_memory_fraction), so cells cannot starve each other; the cap is in every record and in the report.
#   OUT=dir SLOTS=2 bash scripts/gpu_matrix.sh [hydra overrides...]     e.g. engine=sdnq,bnb
# compile=none cells run first, then compile=regional. Re-running resumes (stored cells are skipped).
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)
OUT=${OUT:-outputs/gpu_matrix}
SLOTS=${SLOTS:-2}
mkdir -p "$OUT"
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export HARNESS_STORE=${HARNESS_STORE:-$OUT/matrix.sqlite} HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache}
export PYTHONUNBUFFERED=1 HARNESS_GPU_SLOTS=$SLOTS
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then  # the launcher leases only these
  gpus=$(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c .)
else
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
fi
export HARNESS_GPU_JOBS=$(( (gpus > 0 ? gpus : 1) * SLOTS ))
# Cells share the host's cores: without a limit each one would start a thread per core.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / HARNESS_GPU_JOBS > 0 ? $(nproc) / HARNESS_GPU_JOBS : 1 ))}
fraction=$("$PYTHON" -c "print(round(0.92 / $SLOTS, 3))")
for comp in ${COMPILES:-none regional}; do
  "$PYTHON" -m harness +experiment=matrix hydra/launcher=joblib-gpus compile="$comp" \
    run.gpu_memory_fraction="$fraction" hydra.sweep.dir="$HARNESS_CACHE/multirun/matrix-$comp-\${now:%H%M%S}" \
    "$@" 2>&1 | grep -E "^\[|^skip|rror" | tee -a "$OUT/cells.txt"
done
"$PYTHON" -m reports matrix --store "$HARNESS_STORE" --out "$OUT" >/dev/null && head -c 4000 "$OUT/matrix.md"
