#!/usr/bin/env bash
# Offload modes side by side on a GPU (issue 5's balanced-offload comparison): synthetic FLUX.1-dev, whole
# pipeline, 1024x1024, 4 steps (1 warm-up + 1 timed image), BF16 and SDNQ int8, every offload mode under
# simulated GPU sizes. Cells run one at a time (timings are compared).
#   OUT=dir bash scripts/gpu_offload.sh [hydra overrides...]     e.g. run.gpu_memory_gib=24
# Settings: CAPS (GiB, comma-separated, default 24,16), MODES (default balanced,model,group,sequential),
# STREAM_GROUP=1 (default) also runs group offload on CUDA streams (offload.options.use_stream=true),
# ENGINES (default "engine=bf16,sdnq dtype=bf16,int8"), CELL_TIMEOUT (s, default 400).
# Results: $OUT/offload.sqlite, $OUT/offload.md / .csv.
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)
OUT=${OUT:-outputs/gpu_offload}
mkdir -p "$OUT"
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export HARNESS_STORE=${HARNESS_STORE:-$OUT/offload.sqlite} HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache}
export PYTHONUNBUFFERED=1
sweep() {
  # shellcheck disable=SC2086
  "$PYTHON" -m harness -m model=flux-dev workload=quick workload.steps=4 ${ENGINES:-engine=bf16,sdnq dtype=bf16,int8} \
    "run.gpu_memory_gib=${CAPS:-24,16}" run.timeout_s="${CELL_TIMEOUT:-400}" metrics.save_images=false \
    hydra.sweep.dir="$HARNESS_CACHE/multirun/offload-\${now:%H%M%S}" "$@" 2>&1 \
    | grep -E "^\[ok|^\[(error|oom|timeout|crashed|unsupported)|rror" | tee -a "$OUT/cells.txt"
}
sweep "offload=${MODES:-balanced,model,group,sequential}" "$@"
[[ "${STREAM_GROUP:-1}" == 1 ]] && sweep offload=group offload.options.use_stream=true "$@"
"$PYTHON" -m reports offload --store "$HARNESS_STORE" --out "$OUT" >/dev/null && cat "$OUT/offload.md"
