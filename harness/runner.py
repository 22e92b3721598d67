"""The parent side of a run: validate -> resume check -> reference -> isolated cell -> store.

Runs in the long-lived process (one per sweep with Hydra's basic launcher). It imports the heavy
libraries once, never initialises CUDA and never runs torch ops, so every cell can be forked warm.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from harness import env, reference
from harness.isolate import run_isolated
from harness.result import build_record, clean, write_json
from harness.store import ResultStore
from harness.synthetic import ARCHITECTURES
from harness.validate import Cell

# torch.cuda.is_available() through NVML: the parent must not create a CUDA context before forking.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


def warm_imports(device: str) -> None:
    """Import what every cell needs, once, in the parent (the fork inherits it).

    Only on CPU runs: on a CUDA machine some backends create a CUDA context when imported (torchao via
    diffusers), which would poison forked children; there the children import for themselves, a few
    seconds next to loading and generating on a GPU."""
    if device != "cpu":
        return
    import diffusers  # noqa: F401
    import torchmetrics.functional.image  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import FluxPipeline, StableDiffusionXLPipeline  # noqa: F401
    from transformers import CLIPTextModel, T5EncoderModel  # noqa: F401


def device_type(cell: Cell) -> str:
    import torch

    requested = cell.run["device"]
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested.split(":")[0]


def versions(cell: Cell) -> dict:
    from engines.registry import get_engine_class

    out = {p: env.package_version(p) for p in ("torch", "diffusers", "transformers")}
    out.update(get_engine_class(cell.engine).package_versions())
    return out


def cell_key(cell: Cell, hardware: str, vers: dict) -> str:
    """Identity of a cell for resume: the config that shapes the run, library versions, hardware."""
    model = dict(cell.model)
    if not cell.checkpoint_path:
        model["fingerprint"] = ARCHITECTURES[model["synthetic"]].fingerprint()
    identity = {"model": model, "checkpoint": cell.checkpoint_path, "engine": cell.engine, "dtype": cell.dtype,
                "mode": cell.mode, "components": cell.components, "options": cell.engine_options,
                "offload": cell.offload, "compile": cell.compile, "workload": cell.workload,
                "metrics": cell.metrics, "device": cell.run["device"], "hardware": hardware,
                "gpu_memory_fraction": cell.run.get("gpu_memory_fraction"), "versions": vers}
    if cell.run.get("gpu_memory_gib"):  # only when set, so that the keys of earlier records stay valid
        identity["gpu_memory_gib"] = cell.run["gpu_memory_gib"]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def reference_cell(cell: Cell) -> Cell:
    """The BF16 cell whose images ``cell`` is compared with: same model and workload, no offload/compile,
    no GPU memory cap (the reference must fit whatever the cell under test simulates)."""
    config = json.loads(json.dumps(cell.config))
    config["run"] = {**cell.run, "gpu_memory_fraction": None, "gpu_memory_gib": None}
    config["engine"] = {"name": "bf16", "mode": "post", "components": ["denoiser"], "options": {}}
    config["dtype"] = "bf16"
    config["offload"] = {"name": "none", "options": {}}
    config["compile"] = {**config["compile"], "name": "none"}
    denoiser = "transformer" if cell.model["family"] == "flux" else "unet"
    return dataclasses.replace(cell, config=config, engine="bf16", dtype="bf16", mode="post",
                               components=[denoiser], engine_options={}, offload=config["offload"],
                               compile=config["compile"], requires=[], run=config["run"])


def run(cell: Cell, run_dir: str, echo=print) -> dict | None:
    """Run ``cell`` (and its BF16 reference first, when not cached); return its record, or None when
    the store already holds it (resume) and ``run.force`` is off."""
    from harness.cell import CellJob, run_cell

    started = time.perf_counter()
    store = ResultStore(cell.run["store"])
    dev = device_type(cell)
    hardware = env.hardware_name(dev)
    vers = versions(cell)
    key = cell_key(cell, hardware, vers)
    if store.has(key) and not cell.run["force"]:
        echo(f"skip (already stored; run.force=true re-runs): {describe(cell)}")
        return None
    warm_imports(dev)
    ref_key = reference.reference_key(cell, hardware, {k: vers[k] for k in ("torch", "diffusers", "transformers")})
    parent_env = {"device": dev, "device_name": hardware, "versions": vers, "git_sha": env.git_sha()}

    reference_s = 0.0
    if not cell.is_reference and reference.load(cell.run["cache_dir"], ref_key) is None:
        t_ref = time.perf_counter()
        # Parallel workers of one sweep share the cache: one computes the reference, the others wait.
        with reference.lock(cell.run["cache_dir"], ref_key):
            if reference.load(cell.run["cache_dir"], ref_key) is None:
                _run_reference(reference_cell(cell), ref_key, run_dir, hardware, parent_env, store, echo)
        reference_s = time.perf_counter() - t_ref

    outcome = run_isolated(run_cell, CellJob(cell, run_dir, ref_key, save_reference=cell.is_reference),
                           cell.run["timeout_s"])
    record = build_record(cell, key, outcome, run_dir, parent_env)
    record["metrics"]["harness_overhead_s"] = harness_overhead(
        record["metrics"], time.perf_counter() - started - reference_s)
    _persist(record, run_dir, store)
    return record


def harness_overhead(metrics: dict, total_s: float) -> float | None:
    """Seconds of this cell spent on anything but loading + quantizing and generating: validation,
    the fork, environment capture, quality metrics, writing images and records. (A BF16 reference
    computed for the cell is a cell of its own and is not counted.)"""
    if metrics.get("load_s") is None or metrics.get("s_per_image") is None:
        return None
    work = metrics["load_s"] + (metrics.get("first_call_s") or 0) + \
        metrics["s_per_image"] * (metrics.get("n_timed_calls") or 1)
    return max(0.0, total_s - work)


def _run_reference(ref_cell: Cell, ref_key: str, run_dir: str, hardware: str, parent_env: dict,
                   store: ResultStore, echo) -> None:
    """Compute and cache the BF16 reference images; the run is stored as the bf16 cell it is."""
    from harness.cell import CellJob, run_cell

    ref_dir = str(Path(run_dir) / "reference")
    echo(f"computing BF16 reference images: {describe(ref_cell)}")
    outcome = run_isolated(run_cell, CellJob(ref_cell, ref_dir, ref_key, save_reference=True),
                           ref_cell.run["timeout_s"])
    _persist(build_record(ref_cell, cell_key(ref_cell, hardware, versions(ref_cell)), outcome, ref_dir, parent_env),
             ref_dir, store)
    if outcome["status"] != "ok":
        echo(f"reference run ended with status {outcome['status']}: {(outcome.get('error') or {}).get('message')}")


def _persist(record: dict, run_dir: str, store: ResultStore) -> None:
    write_json(record, Path(run_dir) / "result.json")
    store.append(clean(record))


def describe(cell: Cell) -> str:
    return (f"model={cell.model['name']} engine={cell.engine} dtype={cell.dtype} mode={cell.mode} "
            f"offload={cell.offload['name']} compile={cell.compile['name']}")


def summary_table(record: dict) -> str:
    """A short human table of one record."""
    m, q = record["metrics"], record["quality"]

    def fmt(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    rows = [("status", record["status"]),
            ("cell", f"{record['model']} / {record['engine']}:{record['dtype']} / offload={record['offload']} "
                     f"/ compile={record['compile']}")]
    if record.get("error"):
        rows.append(("error", f"{record['error']['type']}: {record['error']['message']}"))
    mem = "GPU" if m.get("memory_kind") == "cuda" else "host RSS"
    rows += [("weights (quantized components)", f"{fmt(m['weight_gib'], '.4f')} GiB "
              f"(stored BF16: {fmt(m.get('reference_weight_gib'), '.4f')} GiB)"),
             (f"memory after load ({mem})", f"{fmt(m['mem_after_load_gib'])} GiB"),
             (f"peak during generation ({mem})", f"{fmt(m['peak_mem_gib'])} GiB"),
             ("load", f"{fmt(m['load_s'], '.2f')} s"),
             ("first call", f"{fmt(m['first_call_s'], '.2f')} s"),
             ("denoising speed", f"{fmt(m['steps_per_s'], '.2f')} steps/s"),
             ("end to end", f"{fmt(m['s_per_image'], '.2f')} s/image"),
             ("PSNR vs BF16", f"{fmt(q.get('psnr_db'), '.2f')} dB"),
             ("SSIM / MS-SSIM", f"{fmt(q.get('ssim'), '.4f')} / {fmt(q.get('ms_ssim'), '.4f')}"),
             ("LPIPS / CLIP", f"{fmt(q.get('lpips'), '.4f')} / {fmt(q.get('clip_score'), '.2f')}")]
    for metric, why in (q.get("unavailable") or {}).items():
        rows.append((f"  {metric} unavailable", why))
    if q.get("note"):
        rows.append(("note", q["note"]))
    rows.append(("result", str(Path(record["run_dir"]) / "result.json")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
