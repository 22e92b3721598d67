"""Noise floors: how far BF16 itself moves from the eager BF16 reference under a cell's compile mode (and
offload mode, where that mode's numerics can differ), so a quantized cell's deviation can be read against it.

The floor of a cell is one BF16 cell (`spec_for`): the cell's model, workload and compile settings, its
offload settings when the offload mode is in `NUMERIC_OFFLOADS` (else none), no LoRA. It is computed once per
reference (workload + hardware + versions) and floor settings (`key`), in its own isolated run before the
first cell that needs it (`ensure`), stored as the bf16 cell it is; its images go to the reference cache
under the floor key and `floor.json` there holds its metrics against the reference (`settle`). Every cell
with those settings carries that entry as ``quality.floor`` (`entry`). Cells with a LoRA carry none.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile

from harness import reference
from harness.record import QUALITY_KEYS

#: Offload modes that stream weights to the device during the forward (copies, streams, hooks on every
#: layer): their numerics can differ from offload=none, so they get floors of their own. ``model`` moves
#: whole components between calls and computes exactly as offload=none does.
NUMERIC_OFFLOADS = ("sequential", "group", "balanced")

FILE = "floor.json"


def _floor_offload(spec) -> bool:
    return spec.offload["name"] in NUMERIC_OFFLOADS


def needs_floor(spec) -> bool:
    """Whether ``spec`` is read against a floor: a compile mode, or an offload mode in `NUMERIC_OFFLOADS`,
    and no LoRA."""
    return not spec.has_lora and (spec.compile["name"] != "none" or _floor_offload(spec))


def spec_for(spec):
    """The BF16 cell that is the floor of ``spec``: its reference cell (`harness.reference.spec_for`) with
    ``spec``'s compile settings and, for an offload mode in `NUMERIC_OFFLOADS`, its offload settings and GPU
    cap (what the mode streams depends on the cap)."""
    base = reference.spec_for(spec)
    compile_ = json.loads(json.dumps(spec.compile))
    config = {**base.config, "compile": compile_}
    changes = {"compile": compile_}
    if _floor_offload(spec):
        offload = json.loads(json.dumps(spec.offload))
        run = {**base.run, "gpu_memory_fraction": spec.run.get("gpu_memory_fraction"),
               "gpu_memory_gib": spec.run.get("gpu_memory_gib")}
        config.update(offload=offload, run=run)
        changes.update(offload=offload, run=run)
    return dataclasses.replace(base, config=config, **changes)


def is_floor(spec) -> bool:
    """Whether ``spec`` is itself the floor cell of its settings (the same cell key as `spec_for`'s)."""
    from harness.resume import cell_key

    return needs_floor(spec) and cell_key(spec_for(spec), "", {}) == cell_key(spec, "", {})


def key(spec, reference_key: str) -> str | None:
    """The floor key of ``spec`` (None when it needs no floor): its reference key and floor settings."""
    if not needs_floor(spec):
        return None
    settings = {"reference": reference_key, "compile": spec.compile}
    if _floor_offload(spec):
        settings.update(offload=spec.offload, gpu_memory_fraction=spec.run.get("gpu_memory_fraction"),
                        gpu_memory_gib=spec.run.get("gpu_memory_gib"))
    blob = json.dumps({"floor": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load(cache_dir: str, floor_key: str) -> dict | None:
    """The floor entry stored under ``floor_key``, or None when it has not been computed."""
    path = reference.folder(cache_dir, floor_key) / FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def save(cache_dir: str, floor_key: str, entry: dict) -> None:
    """Write the floor entry atomically (a reader sees none or all of it)."""
    target = reference.folder(cache_dir, floor_key)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(entry, fh, indent=1, sort_keys=True)
    os.replace(tmp, target / FILE)


def ensure(spec, floor_key: str | None, run_floor) -> bool:
    """Make sure the floor ``floor_key`` of ``spec`` exists; ``run_floor(floor_spec)`` computes it (an
    isolated BF16 cell, stored as such, whose record `settle` turns into the entry) when it does not.
    Workers sharing the cache wait for the one computing it. True when this call computed it."""
    cache = spec.run["cache_dir"]
    if floor_key is None or is_floor(spec) or load(cache, floor_key) is not None:
        return False
    with reference.lock(cache, floor_key):
        if load(cache, floor_key) is not None:
            return False
        run_floor(spec_for(spec))
    return True


def entry(record) -> dict:
    """The floor entry of a floor cell's record: its quality figures against the reference (a failed
    floor cell: none, and why), the floor cell's key, its status and settings."""
    quality = record.quality
    return {**{k: getattr(quality, k) for k in QUALITY_KEYS}, "unavailable": dict(quality.unavailable or {}),
            "cell_key": record.cell_key, "status": record.status, "compile": record.compile,
            "offload": record.offload, "reference": quality.reference}


def settle(record, spec, floor_key: str | None) -> None:
    """Give ``record`` (of ``spec``) its ``quality.floor``. A floor cell's own record first becomes the stored
    entry; any other cell reads the stored one (or says why there is none)."""
    if floor_key is None:
        return
    cache = spec.run["cache_dir"]
    if is_floor(spec):
        save(cache, floor_key, entry(record))
    stored = load(cache, floor_key)
    record.quality.floor = stored if stored is not None else {
        "unavailable": {"all": "the noise floor of these settings has not been computed"}}


def within(value: float | None, floor_value: float | None, metric: str) -> bool | None:
    """Whether ``value`` of ``metric`` deviates from the reference no more than the floor does (PSNR, SSIM,
    MS-SSIM: at least the floor's; LPIPS: at most); None when either is missing. A PSNR of null with the
    floor's null means both are identical to the reference."""
    if value is None or floor_value is None:
        return None
    return value <= floor_value if metric == "lpips" else value >= floor_value
