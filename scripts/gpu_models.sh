#!/usr/bin/env bash
# Full-size synthetic cells of the newer model families on one GPU (issue 17): for each model, BF16, SDNQ int8,
# bitsandbytes NF4 and torchao int8, each with offload none (uncapped) and balanced under a 24 GiB cap.
#   source scripts/device_env.sh SHA; OUT=dir bash scripts/gpu_models.sh [MODEL ...]
# MODELs (default: qwen-image sd35-large wan22-ti2v-5b z-image-turbo) run in order. One invocation stops
# starting work when BUDGET_S (default 480) seconds are spent, so a device command stays under 9 minutes:
# call it again with the same arguments and it goes on where it stopped (cells already stored are skipped,
# a checkpoint build left running in the background is waited for). Results: $OUT/models.sqlite (a copy of
# $STORE, default /tmp/gpu_models/models.sqlite, which lives as long as the machine; on a fresh machine
# STORE_IN=path seeds it from an earlier $OUT/models.sqlite carried in the working tree), $OUT/models.txt,
# $OUT/build-MODEL.json (seconds and GB of each checkpoint build).
#
# Disk: the device has 64 GiB. Synthetic checkpoints are BF16 (GB, decimal): qwen-image 57.7 (transformer
# 40.9, Qwen2.5-VL 16.6), sd35-large 27.4, wan22-ti2v-5b 22.8, z-image-turbo 20.5, chroma 27.5, flux-kontext
# 33.7; flux2-dev 112.6 does not fit (tiny only, on the CPU). One checkpoint is built at a time, on the GPU,
# after checking free space, and deleted once every cell of its model is stored (KEEP=1 keeps it).
# Settings: CELL_EST_S (default 200): a cell starts only with this much budget left; CELL_TIMEOUT (s, 470);
# BUILD_DEVICE (default cuda: where the weights are drawn, as a cell that finds no checkpoint does).
# SWEEP=1: each model's cells run as two sweeps (offload none, then balanced under the cap), one process each,
# instead of a process per cell (about 25 s of start-up each on the lent host), with no budget checks: for
# `scripts/gpu_queue.sh`, which outlives a device command. With SWEEP=1, ENGINES (default bf16,sdnq,bnb,torchao),
# OFFLOADS (default "none balanced") and EXTRA (more overrides, e.g. run.force=true to run stored cells again)
# narrow or extend the sweeps.
# Workloads: images workload=quick (1024x1024, 8 steps, 1 warm-up + 1 timed); Wan 2.2 704x1280, 41 frames
# (model.frames=41), 8 steps. Each cell is a fresh `python -m harness` process.
set -uo pipefail
# Process start-up is timed: wait for the bytecode device_env.sh compiles in the background, if it does.
while [[ -n ${PYTHONPYCACHEPREFIX:-} && -f $PYTHONPYCACHEPREFIX/.started && ! -f $PYTHONPYCACHEPREFIX/.ok ]]; do sleep 2; done
PY=${PYTHON:-python3}
OUT=${OUT:-outputs/gpu_models}
WORK=${WORK:-/tmp/gpu_models}
STORE=${STORE:-$WORK/models.sqlite}
BUDGET_S=${BUDGET_S:-480}
CELL_EST_S=${CELL_EST_S:-200}
CELL_TIMEOUT=${CELL_TIMEOUT:-470}
export HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache} PYTHONUNBUFFERED=1
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT" "$WORK"
[[ -n "${STORE_IN:-}" && -f "$STORE_IN" && ! -f "$STORE" ]] && cp "$STORE_IN" "$STORE"
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(qwen-image sd35-large wan22-ti2v-5b z-image-turbo)
#: engine dtype offload, in run order (the BF16 uncapped cell is every other cell's reference).
CELLS=("bf16 bf16 none" "sdnq int8 none" "bnb nf4 none" "torchao int8 none"
       "bf16 bf16 balanced" "sdnq int8 balanced" "bnb nf4 balanced" "torchao int8 balanced")

finish() {
  [[ -f "$STORE" ]] && cp "$STORE" "$OUT/models.sqlite"
  "$PY" - "$STORE" <<'PY' | tee "$OUT/models.txt"
import sys
from pathlib import Path
from harness.store import ResultStore
if not Path(sys.argv[1]).is_file():
    sys.exit(0)
for r in ResultStore(sys.argv[1]).records():
    m, e = r.get("metrics") or {}, r.get("error") or {}
    cap = (r.get("env") or {}).get("gpu_cap_gib")
    fig = lambda k, f: "-" if m.get(k) is None else format(m[k], f)
    print(f"{r['model']:15s} {r['engine']}:{r['dtype']:5s} offload={r['offload']:8s} cap={cap} {r['status']:11s} "
          f"steps/s {fig('steps_per_s', '.3g')} s/call {fig('s_per_image', '.3g')} load {fig('load_s', '.3g')} "
          f"weights {fig('weight_gib', '.2f')} GiB peak {fig('peak_mem_gib', '.1f')} GiB "
          f"{(e.get('type') or '') + ': ' + (e.get('message') or '')[:120] if e else ''}")
PY
  exit 0
}

size_gb() {  # BF16 bytes of the synthetic checkpoint, counted from its data file on the meta device
  "$PY" - "$1" <<'PY'
import sys, torch
from harness.synthetic import ARCHITECTURES, instantiate
a = ARCHITECTURES[sys.argv[1]]
n = 0
for c in a.modules():
    with torch.device("meta"):
        n += sum(p.numel() for p in instantiate(a.classes[c], a.components.get(c, {})).parameters())
print(round(n * 2 / 1e9, 1))
PY
}

folder_of() { "$PY" -c "from harness import synthetic; print(synthetic.checkpoint_dir('$1', '$HARNESS_CACHE'))"; }

stored_status() {  # the stored status of one cell, or nothing
  "$PY" - "$STORE" "$@" <<'PY'
import sys
from pathlib import Path
from harness.store import ResultStore
store, model, engine, dtype, offload = sys.argv[1:6]
if Path(store).is_file():
    hits = [r["status"] for r in ResultStore(store).records()
            if (r["model"], r["engine"], r["dtype"], r["offload"]) == (model, engine, dtype, offload)]
    print(hits[-1] if hits else "")
PY
}

cat > "$WORK/build.py" <<'PY'
"""Build one synthetic checkpoint on the GPU; write its build seconds and size; drop the .building marker."""
import json, os, sys, time
from pathlib import Path
model, cache, work = sys.argv[1:4]
try:
    from harness import synthetic
    t = time.perf_counter()
    folder = synthetic.ensure_checkpoint(model, cache, os.environ.get("BUILD_DEVICE", "cuda"))
    gb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9
    Path(work, f"build-{model}.json").write_text(json.dumps(
        {"model": model, "build_s": round(time.perf_counter() - t, 1), "gb": round(gb, 2), "folder": str(folder)}))
finally:
    Path(work, f"{model}.building").unlink(missing_ok=True)
PY

ensure_built() {  # 0 once the checkpoint of $1 is on disk; 1 when the budget ran out first; 2 when it cannot be
  local model=$1 folder need free; folder=$(folder_of "$model")
  [[ -f "$folder/model_index.json" ]] && return 0
  if [[ ! -f "$WORK/$model.building" ]]; then
    need=$(size_gb "$model")
    mkdir -p "$HARNESS_CACHE"
    free=$(df -B1000000000 --output=avail "$HARNESS_CACHE" | tail -1)
    echo "== $model: checkpoint ${need} GB, ${free} GB free"
    if ! "$PY" -c "import sys; sys.exit(0 if $free >= $need + 3 else 1)"; then
      echo "$model: not enough disk for its ${need} GB checkpoint (${free} GB free): skipped"; return 2
    fi
    touch "$WORK/$model.building"
    # In its own session: a build the budget cuts short goes on, and the next call waits for it.
    setsid nohup "$PY" "$WORK/build.py" "$model" "$HARNESS_CACHE" "$WORK" > "$WORK/$model.build.log" 2>&1 < /dev/null &
  fi
  while [[ -f "$WORK/$model.building" ]]; do
    (( $(left) < 15 )) && { echo "$model: checkpoint still building; call again to go on"; return 1; }
    sleep 5
  done
  [[ -f "$WORK/build-$model.json" ]] && cp "$WORK/build-$model.json" "$OUT/" && cat "$WORK/build-$model.json"
  [[ -f "$folder/model_index.json" ]] || { echo "$model: build failed:"; tail -5 "$WORK/$model.build.log"; return 2; }
}

for model in "${MODELS[@]}"; do
  [[ -f "$WORK/$model.done" ]] && continue
  if [[ "$model" == wan* ]]; then
    work=(workload=quick workload.height=704 workload.width=1280 model.frames=41)
  else
    work=(workload=quick)
  fi
  if [[ ${SWEEP:-0} == 1 ]]; then
    ensure_built "$model"; rc=$?
    (( rc == 1 )) && finish
    (( rc == 2 )) && continue
    for offload in ${OFFLOADS:-none balanced}; do
      # shellcheck disable=SC2086
      args=(-m model="$model" engine="${ENGINES:-bf16,sdnq,bnb,torchao}" offload="$offload" "${work[@]}"
            run.timeout_s="$CELL_TIMEOUT" run.store="$STORE" metrics.save_images=false ${EXTRA:-})
      [[ "$offload" == balanced ]] && args+=(run.gpu_memory_gib=24)
      echo "== $model offload=$offload: one sweep"
      TORCHINDUCTOR_CACHE_DIR=$WORK/inductor "$PY" -m harness "${args[@]}" 2>&1 \
        | grep -E "^\[(ok|unsupported|error|oom|timeout|crashed)\]|^sweep|^  \[|^warning"
      [[ -f "$STORE" ]] && cp "$STORE" "$OUT/models.sqlite"  # in $OUT after every sweep: a queue's archive carries it
    done
    touch "$WORK/$model.done"
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$(folder_of "$model")"
    continue
  fi
  complete=1
  for cell in "${CELLS[@]}"; do
    read -r engine dtype offload <<< "$cell"
    status=$(stored_status "$model" "$engine" "$dtype" "$offload")
    [[ -n "$status" && "$status" != timeout ]] && continue
    (( $(left) < CELL_EST_S )) && { complete=0; break; }
    ensure_built "$model"; rc=$?
    (( rc == 1 )) && finish
    (( rc == 2 )) && { complete=0; break; }
    args=(model="$model" engine="$engine" dtype="$dtype" offload="$offload" "${work[@]}" run.timeout_s="$CELL_TIMEOUT"
          run.store="$STORE" metrics.save_images=false)
    [[ "$offload" == balanced ]] && args+=(run.gpu_memory_gib=24)
    [[ "$status" == timeout ]] && args+=(run.force=true)
    echo "== $model $engine:$dtype offload=$offload ($(left) s of budget left)"
    TORCHINDUCTOR_CACHE_DIR=$WORK/inductor "$PY" -m harness "${args[@]}" > "$WORK/cell.txt" 2>&1
    grep -E "^(status|error|denoising speed|end to end|weights|peak during|load) " "$WORK/cell.txt"
  done
  if (( complete )); then
    touch "$WORK/$model.done"
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$(folder_of "$model")"
  else
    break
  fi
done
finish
