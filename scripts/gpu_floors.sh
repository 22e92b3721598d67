#!/usr/bin/env bash
# Noise floors on the H200 (issue 16): one SDNQ int8 cell per compile mode on a synthetic model at 1024x1024
# (workload=quick with workload.repeats=3, so the records also carry their spread); each cell's floor (BF16
# with the same compile mode against eager BF16) is computed before it and stored as its own bf16 cell.
# One process per model, one fresh inductor cache per process; renders the reports into $OUT.
#   source scripts/device_env.sh SHA; build flux-dev; build sdxl
#   OUT=dir bash scripts/gpu_floors.sh sdxl [MODES]       # MODES default: every compile mode but none
#   ENGINE=bf16 DTYPE=bf16 bash scripts/gpu_floors.sh ...  # the floor cells alone (a BF16 cell under a mode is its floor)
#   DEADLINE=epoch-seconds ...                              # each cell's limit: what is left until then, less 60 s
# Every line the cells print (inductor's autotuning tables included) goes to $OUT/raw.log.gz.
# Autotuning that outlasts a session: inductor writes each GEMM / convolution it has benchmarked to its local
# autotune cache at once, so a cell cut short by its time limit keeps what it tuned. The run copies that cache
# to $OUT/autotune-cache/ every 20 s while the cells run (a job cut short by the device budget keeps what was
# copied) and once at the end; AUTOTUNE_SEED=dir (such a copy, carried) starts the next run from it. Records of a
# seeded run say the cache was warm (env.compile_cache.files_at_start > 0): their first call is not a cold one.
set -uo pipefail
# Process start-up is timed: wait for the bytecode device_env.sh compiles in the background, if it does.
while [[ -n ${PYTHONPYCACHEPREFIX:-} && -f $PYTHONPYCACHEPREFIX/.started && ! -f $PYTHONPYCACHEPREFIX/.ok ]]; do sleep 2; done
MODEL=${1:?usage: gpu_floors.sh MODEL [modes, e.g. regional,cudagraph]}
MODES=${2:-regional,cudagraph,regional-cudagraph,default,reduce-overhead,max-autotune}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-outputs/gpu_floors}
mkdir -p "$OUT"
export HARNESS_STORE=${HARNESS_STORE:-$OUT/floors.sqlite} PYTHONUNBUFFERED=1
while [[ -f /tmp/$MODEL.build.log && ! -f /tmp/$MODEL.done ]]; do sleep 5; done
start=$(date +%s)
cache=$(mktemp -d)
if [[ -n ${AUTOTUNE_SEED:-} ]]; then mkdir -p "$cache/cache" && cp "$AUTOTUNE_SEED"/* "$cache/cache/"; fi
if [[ -n ${DEADLINE:-} ]]; then CELL_TIMEOUT=$(( DEADLINE - $(date +%s) - 60 )); echo "cell limit ${CELL_TIMEOUT} s"; fi
save_autotune() { if compgen -G "$cache/cache/*" > /dev/null; then mkdir -p "$OUT/autotune-cache" && cp "$cache"/cache/* "$OUT/autotune-cache/"; fi; }
( while sleep 20; do save_autotune; done ) &
saver=$!
TORCHINDUCTOR_CACHE_DIR=$cache "$PYTHON" -m harness -m model="$MODEL" engine="${ENGINE:-sdnq}" dtype="${DTYPE:-int8}" compile="$MODES" \
  workload=quick workload.repeats=3 metrics.save_images=false run.timeout_s=${CELL_TIMEOUT:-900} "${@:3}" \
  2>&1 | tee >(gzip > "$OUT/raw.log.gz") | grep --line-buffered -E "^\[(ok|unsupported|error|oom|timeout|crashed)\]|^sweep|^  \[|noise floor|rror" | tee -a "$OUT/cells.txt"
echo "sweep rc=${PIPESTATUS[0]} wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/cells.txt"
kill "$saver" 2> /dev/null; wait "$saver" 2> /dev/null
save_autotune && ls -l "$OUT/autotune-cache" 2> /dev/null
"$PYTHON" -m reports --store "$HARNESS_STORE" --out "$OUT" > "$OUT/reports.txt" 2>&1 || tail -5 "$OUT/reports.txt"
