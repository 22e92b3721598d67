#!/usr/bin/env bash
# Issue 15's SDXL comparison through the harness: BF16 and SDNQ int8 (weight-only, and with the quantized
# matmul on linears and convolutions), each eager and with compile=cudagraph, synthetic SDXL at 1024x1024
# (workload=quick), one sweep process per engine. Writes $OUT/sdxl_speed.sqlite and the sweep logs.
#   source scripts/device_env.sh SHA; build sdxl; OUT=dir bash scripts/gpu_sdxl_speed.sh
set -uo pipefail
OUT=${OUT:-outputs/sdxl_speed}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export HARNESS_STORE="$OUT/sdxl_speed.sqlite" PYTHONUNBUFFERED=1
common=(model=sdxl workload=quick run.timeout_s=600)
$PY -m harness -m engine=bf16 compile=none,cudagraph "${common[@]}" > "$OUT/bf16.txt" 2>&1
$PY -m harness -m engine=sdnq dtype=int8 engine.options.use_quantized_matmul=false,true compile=none,cudagraph \
  "${common[@]}" > "$OUT/sdnq.txt" 2>&1
$PY - "$OUT" <<'PY'
import sys
from harness.store import ResultStore
rows = []
for r in ResultStore(f"{sys.argv[1]}/sdxl_speed.sqlite").records():
    m = r["metrics"]
    qmm = (r.get("engine_options") or {}).get("use_quantized_matmul")
    rows.append((r["engine"], r["dtype"], qmm, r["compile"], r["status"], m.get("steps_per_s"), m.get("first_call_s"),
                 (r.get("error") or {}).get("message", "")[:120]))
base = {c: s for e, d, q, c, st, s, f, err in rows if e == "bf16" and st == "ok"}
for e, d, q, c, st, s, f, err in rows:
    ratio = f"{s / base['none']:.2f}x BF16 eager" if s and base.get("none") else ""
    print(f"{e:5s} {d:5s} qmm={q!s:5s} compile={c:9s} {st:11s} steps/s={s and round(s, 2)} first={f and round(f, 1)} {ratio} {err}")
PY
