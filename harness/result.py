"""The result record (what result.json and the store hold) and its atomic writing.

Keys (README documents them for users):
  schema_version, cell_key, created, status (ok|unsupported|error|oom|timeout|crashed),
  error {type, message, normalized, stage, reason?, traceback?} or null (stage: where the cell was),
  model, engine, dtype, mode, components, offload, compile, workload {...},
  metrics {load_s, read_s, quantize_s, move_s, first_call_s, steps_per_s, step_s, s_per_image,
           mem_after_load_gib, reserved_after_load_gib, peak_mem_gib, peak_reserved_gib,
           host_peak_rss_gib, weight_gib, reference_weight_gib, total_weight_gib, memory_kind,
           harness_overhead_s},
  quality {psnr_db, ssim, ms_ssim, lpips, clip_score, unavailable {metric: reason}, reference,
           synthetic_weights, note},
  engine_report, offload_report, compile_report, env, config, run_dir, images, wall_s.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

SCHEMA_VERSION = 1
METRIC_KEYS = ("load_s", "first_call_s", "steps_per_s", "s_per_image", "mem_after_load_gib", "peak_mem_gib",
               "peak_reserved_gib", "host_peak_rss_gib", "weight_gib")
QUALITY_KEYS = ("psnr_db", "ssim", "ms_ssim", "lpips", "clip_score")


def build_record(cell, cell_key: str, outcome: dict, run_dir: str, parent_env: dict) -> dict:
    payload = outcome.get("payload") or {}
    metrics = {k: None for k in METRIC_KEYS}
    metrics.update(payload.get("metrics") or {})
    quality = {k: None for k in QUALITY_KEYS}
    quality["unavailable"] = {}
    quality.update(payload.get("quality") or {})
    if outcome["status"] != "ok":
        quality["unavailable"] = {"all": f"run ended with status {outcome['status']}"}
    return {
        "schema_version": SCHEMA_VERSION,
        "cell_key": cell_key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": outcome["status"],
        "error": outcome.get("error"),
        "model": cell.model["name"],
        "engine": cell.engine,
        "dtype": cell.dtype,
        "mode": cell.mode,
        "components": cell.components,
        "offload": cell.offload["name"],
        "compile": cell.compile["name"],
        "workload": {k: cell.workload[k] for k in ("name", "steps", "height", "width", "warmup", "repeats")}
        | {"n_prompts": len(cell.workload["prompts"]), "n_seeds": len(cell.workload["seeds"])},
        "metrics": metrics,
        "quality": quality,
        "engine_report": payload.get("engine_report"),
        "offload_report": payload.get("offload_report"),
        "compile_report": payload.get("compile_report"),
        "env": payload.get("env") or parent_env,
        "config": cell.config,
        "run_dir": run_dir,
        "images": payload.get("images") or [],
        "wall_s": outcome.get("wall_s"),
    }


def clean(value):
    """JSON has no NaN/inf: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_json(record: dict, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a result.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".result-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(clean(record), fh, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path
