#!/usr/bin/env bash
# Scale-out check (issue 6): the same sweep on one GPU (basic launcher, cell after cell) and on every GPU of
# this host (hydra/launcher=joblib-gpus, one GPU per cell). Prints both wall times, the speed-up and whether
# every cell landed in each store; writes $OUT/timing.json and both stores.
#   OUT=dir bash scripts/gpu_sweep_timing.sh                  # default: 7 cells on synthetic SDXL
#   SWEEP="model=flux-tiny workload=tiny engine=bf16,sdnq dtype=bf16,int8" bash scripts/gpu_sweep_timing.sh
# A warm-up cell first builds the synthetic checkpoint and the BF16 reference, so neither timed run pays for it.
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the interpreter (default python3)
OUT=${OUT:-outputs/sweep_timing}
mkdir -p "$OUT"
export HARNESS_GIT_SHA=${HARNESS_GIT_SHA:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export HARNESS_CACHE=${HARNESS_CACHE:-/tmp/harness-cache} PYTHONUNBUFFERED=1
read -r -a sweep <<< "${SWEEP:-model=sdxl workload=quick engine=bf16,torchao,sdnq,bnb,quanto,layerwise,nncf}"
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
jobs=${JOBS:-$(( gpus > 1 ? gpus : 2 ))}
common=(run.timeout_s="${CELL_TIMEOUT:-600}" metrics.save_images=false)
model_args=()
# the warm-up cell takes the sweep's fixed settings: no engine / dtype, no swept (comma-valued) axis
for a in "${sweep[@]}"; do [[ $a == engine=* || $a == dtype=* || $a == *,* ]] || model_args+=("$a"); done

now() { date +%s.%N; }
rm -rf "$OUT/sweeps" "$OUT"/one_gpu.sqlite* "$OUT"/all_gpus.sqlite*
HARNESS_STORE="$OUT/warmup.sqlite" "$PYTHON" -m harness "${model_args[@]}" engine=bf16 "${common[@]}" \
  hydra.run.dir="$HARNESS_CACHE/runs/warmup-\${now:%H%M%S}" > "$OUT/warmup.txt" 2>&1 || { tail "$OUT/warmup.txt"; exit 1; }

start=$(now)
CUDA_VISIBLE_DEVICES=${ONE_GPU:-0} HARNESS_STORE="$OUT/one_gpu.sqlite" "$PYTHON" -m harness -m "${sweep[@]}" "${common[@]}" \
  hydra.sweep.dir="$OUT/sweeps/one_gpu" > "$OUT/one_gpu.txt" 2>&1
one=$("$PYTHON" -c "print($(now) - $start)")

start=$(now)
HARNESS_GPU_JOBS=$jobs HARNESS_STORE="$OUT/all_gpus.sqlite" "$PYTHON" -m harness -m hydra/launcher=joblib-gpus \
  "${sweep[@]}" "${common[@]}" hydra.sweep.dir="$OUT/sweeps/all_gpus" > "$OUT/all_gpus.txt" 2>&1
all=$("$PYTHON" -c "print($(now) - $start)")

"$PYTHON" - "$OUT" "$one" "$all" "$gpus" "$jobs" <<'PY'
import collections, json, sys
from pathlib import Path

from harness.store import ResultStore

out, one, all_, gpus, jobs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = {}
for name in ("one_gpu", "all_gpus"):
    recs = list(ResultStore(f"{out}/{name}.sqlite").records())
    keys = collections.Counter(r["cell_key"] for r in recs)
    runs[name] = {"records": len(recs), "cells": len(keys), "duplicates": sum(n - 1 for n in keys.values()),
                  "status": dict(collections.Counter(r["status"] for r in recs)),
                  "gpus_used": sorted({(r.get("env") or {}).get("device_name") or "cpu" for r in recs})}
leases = [json.loads(p.read_text()) for p in Path(out, "sweeps", "all_gpus").rglob("gpu.json")]
events = sorted([(x["start"], 1) for x in leases] + [(x["end"], -1) for x in leases])
running = peak = 0
for _, step in events:
    running += step
    peak = max(peak, running)
runs["all_gpus"]["jobs_per_gpu"] = dict(collections.Counter(x["gpu"] for x in leases))
runs["all_gpus"]["max_cells_at_once"] = peak
same = set(r["cell_key"] for r in ResultStore(f"{out}/one_gpu.sqlite").records()) == \
    set(r["cell_key"] for r in ResultStore(f"{out}/all_gpus.sqlite").records())
result = {"gpus": gpus, "parallel_jobs": jobs, "one_gpu_s": round(one, 1), "all_gpus_s": round(all_, 1),
          "speedup": round(one / all_, 2), "same_cells": same, **runs}
json.dump(result, open(f"{out}/timing.json", "w"), indent=1)
print(json.dumps(result, indent=1))
PY
