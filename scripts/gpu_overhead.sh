#!/usr/bin/env bash
# Harness overhead on a GPU: the issue's five cells, each in a fresh `python -m harness` call, then a 5-cell
# FLUX.1-dev sweep in one process; every record keeps metrics.harness_overhead_s and its parts
# (metrics.overhead). Writes $OUT/cells.sqlite, $OUT/sweep.sqlite, $OUT/overhead.json and the logs.
#   source scripts/device_env.sh SHA; OUT=dir [PART=cells|sweep] bash scripts/gpu_overhead.sh
# Needs the synthetic flux-dev and sdxl checkpoints in $HARNESS_CACHE (device_env.sh's build); the BF16
# references are computed first (warm-up cells, not measured). CELLS="2 3" runs only those of the five cells
# (1-based; 6 is the offload=none twin of cells 1-2, 7 is cell 2 past its transient calls: 3 warm-ups, 3 timed,
# 8 and 9 are cells 1 and 6 the same way); SWEEP_WORKLOAD=standard runs the sweep at the GPU
# workload (default: quick, like the cells). SCREEN=1 runs the sweep in a tmux terminal and keeps what its
# live display shows every 10 s in $OUT/screen.txt (its output is then not in sweep.txt).
set -uo pipefail
# Process start-up is timed: wait for the bytecode device_env.sh compiles in the background, if it does.
while [[ -n ${PYTHONPYCACHEPREFIX:-} && -f $PYTHONPYCACHEPREFIX/.started && ! -f $PYTHONPYCACHEPREFIX/.ok ]]; do sleep 2; done
OUT=${OUT:-outputs/overhead}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
common=(workload=quick metrics.save_images=true run.timeout_s=900)
now() { date +%s.%N; }

if [[ ${PART:-all} != sweep ]]; then
echo "== imports: the parent's warm imports per engine (harness.prefork), and any CUDA context they create"
$PY - <<'PY' 2>&1 | tee "$OUT/imports.txt"
import time, traceback, types
t0 = time.perf_counter()
import torch
print(f"import torch {time.perf_counter() - t0:.2f} s")
stacks = []
real = torch.cuda._lazy_init
def spy():
    if not torch.cuda.is_initialized():
        stacks.append("".join(traceback.format_stack(limit=14)[:-1]))
    return real()
torch.cuda._lazy_init = spy
from harness import prefork
for family in ("flux", "sdxl"):
    for engine in ("bf16", "sdnq", "torchao", "bnb", "quanto", "nncf", "gguf", "layerwise"):
        out = prefork.warm(types.SimpleNamespace(engine=engine, model={"family": family}), "cuda")
        print(f"{family:5s} {engine:10s} {out['seconds']:6.2f} s  cuda initialised: {out['cuda_initialised']}  fork poisoned: {out['fork_poisoned']}"
              f"  failed: {out['failed']}")
print("lazy-init calls during the imports:", len(stacks))
for s in stacks[:3]:
    print(s)
PY
cells=(
  "model=flux-dev engine=sdnq dtype=int8 offload=balanced"
  "model=flux-dev engine=sdnq dtype=int8 offload=balanced run.gpu_memory_gib=24"
  "model=flux-dev engine=sdnq dtype=float8_e4m3fn engine.options.use_quantized_matmul=true compile=regional"
  "model=sdxl engine=sdnq dtype=int8"
  "model=sdxl engine=torchao dtype=int8"
  "model=flux-dev engine=sdnq dtype=int8"
  "model=flux-dev engine=sdnq dtype=int8 offload=balanced run.gpu_memory_gib=24 workload.warmup=3 workload.repeats=3"
  "model=flux-dev engine=sdnq dtype=int8 offload=balanced workload.warmup=3 workload.repeats=3"
  "model=flux-dev engine=sdnq dtype=int8 workload.warmup=3 workload.repeats=3"
)
picked=()
for i in ${CELLS:-1 2 3 4 5}; do picked+=("${cells[$((i - 1))]}"); done
echo "== warm-up: BF16 references"
for model in flux-dev sdxl; do
  [[ " ${picked[*]} " == *"model=$model "* ]] || continue
  HARNESS_STORE="$OUT/warmup.sqlite" $PY -m harness model=$model engine=bf16 "${common[@]}" > "$OUT/warmup-$model.txt" 2>&1 \
    || { tail -20 "$OUT/warmup-$model.txt"; }
done

echo "== the cells, a fresh process each"
for c in "${picked[@]}"; do
  read -r -a args <<< "$c"
  start=$(now)
  HARNESS_STORE="$OUT/cells.sqlite" TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) $PY -m harness "${args[@]}" "${common[@]}" run.force=true \
    > "$OUT/cell.txt" 2>&1
  rc=$?
  echo "$c rc=$rc process_wall_s=$($PY -c "print(round($(now) - $start, 2))")" | tee -a "$OUT/cells.txt"
  tail -3 "$OUT/cell.txt"
done

fi
if [[ ${PART:-all} != cells ]]; then
echo "== a 5-cell FLUX.1-dev sweep in one process"
sweep_args=(workload=${SWEEP_WORKLOAD:-quick} metrics.save_images=true run.timeout_s=900)
HARNESS_STORE="$OUT/warmup.sqlite" $PY -m harness model=flux-dev engine=bf16 "${sweep_args[@]}" > "$OUT/warmup-sweep.txt" 2>&1 \
  || { tail -20 "$OUT/warmup-sweep.txt"; }
sweep=(-m model=flux-dev engine=sdnq dtype=int8,int4,uint4,int6,float8_e4m3fn "${sweep_args[@]}")
start=$(now)
if [[ ${SCREEN:-0} == 1 ]]; then
  printf '%q ' env HARNESS_STORE="$OUT/sweep.sqlite" "$PY" -m harness "${sweep[@]}" > "$OUT/sweep.cmd"
  tmux new-session -d -s sweep -x 150 -y 45 \
    "bash $OUT/sweep.cmd; rc=\$?; date +%s.%N > $OUT/sweep.end; echo \$rc > $OUT/sweep.rc; sleep 30"
  while [[ ! -f "$OUT/sweep.rc" ]]; do
    sleep 10
    { echo "----- $(date -u +%H:%M:%S)"; tmux capture-pane -p -t sweep; } >> "$OUT/screen.txt"
  done
  sweep_wall=$($PY -c "print($(cat "$OUT/sweep.end") - $start)")
  { echo "----- $(date -u +%H:%M:%S) (finished)"; tmux capture-pane -p -S -60 -t sweep; } >> "$OUT/screen.txt"
  tmux kill-session -t sweep
  tail -30 "$OUT/screen.txt"
else
  HARNESS_STORE="$OUT/sweep.sqlite" $PY -m harness "${sweep[@]}" > "$OUT/sweep.txt" 2>&1
  sweep_wall=$($PY -c "print($(now) - $start)")
  tail -8 "$OUT/sweep.txt"
fi
fi

[[ -f "$OUT/sweep.sqlite" || -f "$OUT/cells.sqlite" ]] || exit 0
$PY - "$OUT" "${sweep_wall:-0}" <<'PY'
import json, os, statistics, sys
from harness.store import ResultStore
out, wall = sys.argv[1], float(sys.argv[2])
def rows(store):
    res = []
    if not os.path.isfile(f"{out}/{store}"):
        return res
    for r in ResultStore(f"{out}/{store}").records():
        m = r["metrics"]
        res.append({"cell": f"{r['model']} {r['engine']}:{r['dtype']} offload={r['offload']} compile={r['compile']}",
                    "status": r["status"], "overhead_s": m.get("harness_overhead_s"), "parts": m.get("overhead"),
                    "load_s": m.get("load_s"), "first_call_s": m.get("first_call_s"), "s_per_image": m.get("s_per_image"),
                    "n_timed_calls": m.get("n_timed_calls"), "steps_per_s": m.get("steps_per_s"), "wall_s": r.get("wall_s")})
    return res
cells, sweep = rows("cells.sqlite"), rows("sweep.sqlite")
work = sum((r["load_s"] or 0) + (r["first_call_s"] or 0) + (r["s_per_image"] or 0) * (r["n_timed_calls"] or 1)
           for r in sweep if r["status"] == "ok")
summary = {"cells": cells, "sweep": sweep, "sweep_wall_s": wall, "sweep_work_s": work,
           "sweep_ratio": wall / work if work else None,
           "sweep_overhead_median_s": statistics.median([r["overhead_s"] for r in sweep if r["overhead_s"] is not None] or [0])}
json.dump(summary, open(f"{out}/overhead.json", "w"), indent=1)
for r in cells + sweep:
    print(f"{r['cell']:80s} {r['status']:6s} overhead {r['overhead_s']} parts {r['parts']} load {r['load_s']} first {r['first_call_s']}")
print(f"sweep wall {wall:.1f} s, work {work:.1f} s, ratio {summary['sweep_ratio']}, median overhead {summary['sweep_overhead_median_s']}")
PY
