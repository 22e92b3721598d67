#!/usr/bin/env bash
# LoRA on the H200: every engine x its default dtype with lora=synthetic (rank 16 and 64) on a synthetic
# model at 1024x1024 (workload=quick: 8 steps, 1 warm-up + 1 timed image, each generated without and with the
# LoRA), into $OUT/lora.sqlite; renders the leaderboard, the matrix (its lora axis) and the LoRA table (lora.md) into $OUT.
#   source scripts/device_env.sh SHA; build flux-dev; build sdxl     (synthetic checkpoints, once per machine)
#   OUT=dir bash scripts/gpu_lora.sh flux-dev 16        # FLUX.1-dev, rank 16 (about 5 min)
#   OUT=dir bash scripts/gpu_lora.sh flux-dev 64        # FLUX.1-dev, rank 64 (same store, same $OUT)
#   OUT=dir bash scripts/gpu_lora.sh sdxl               # SDXL, ranks 16 and 64 (the default: 16,64)
# Arguments after the ranks are more overrides (e.g. workload.steps=4).
# Each invocation stays under ~9 min on one H200 (FLUX split by rank: gguf's in-house q8_0 conversion alone
# takes ~1 min the first time, cached in $HARNESS_CACHE for the next). Every cell gets a record, failures
# included (unsupported / error / oom / timeout / crashed); the script goes on and always renders.
set -uo pipefail
MODEL=${1:?usage: gpu_lora.sh flux-dev|sdxl [ranks, e.g. 16,64]}
RANKS=${2:-16,64}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-outputs/gpu_lora}
mkdir -p "$OUT"
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export HARNESS_STORE=${HARNESS_STORE:-$OUT/lora.sqlite} HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache} PYTHONUNBUFFERED=1
ENGINES=${ENGINES:-bf16,sdnq,torchao,bnb,quanto,nncf,gguf,layerwise}   # default dtype each; bf16 first: the LoRA references

if [[ -f /tmp/$MODEL.build.log && ! -f /tmp/$MODEL.done ]]; then
  echo "waiting for the synthetic $MODEL checkpoint (device_env.sh build)"
  for _ in $(seq 1 120); do [[ -f /tmp/$MODEL.done ]] && break; sleep 5; done
fi

start=$(date +%s)
"$PYTHON" -m harness -m model="$MODEL" engine=$ENGINES lora=synthetic lora.options.rank="$RANKS" workload=quick \
  metrics.save_images=false run.timeout_s=${CELL_TIMEOUT:-300} hydra.sweep.dir="$HARNESS_CACHE/multirun/lora-\${now:%H%M%S}" \
  "${@:3}" 2>&1 | grep -E "^\[(ok|unsupported|error|oom|timeout|crashed)\]|^sweep|^  \[|^skip|rror" | tee -a "$OUT/cells.txt"
echo "sweep rc=${PIPESTATUS[0]} wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/cells.txt"

"$PYTHON" -m reports --store "$HARNESS_STORE" --out "$OUT" > "$OUT/reports.txt" 2>&1 || tail -5 "$OUT/reports.txt"
