"""The parent side of one cell: identify -> claim -> skip if stored -> reference -> isolate -> record -> store.

Runs in the long-lived process (one per sweep with Hydra's basic launcher). It imports the heavy
libraries once, never initialises CUDA and never runs torch ops, so every cell can be forked warm.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import floor, isolate, persist, prefork, reference, resume
from harness.errors import StoreError
from harness.record import Record
from harness.spec import CellSpec
from harness.store import ResultStore

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ.setdefault(_var, "1")


@dataclass
class Outcome:
    """What one call of `run` did: the record (None when skipped) and where it went."""

    record: dict | None
    saved: persist.Saved | None = None
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)


def run(spec: CellSpec, run_dir: str, echo=print, on_stage=None) -> Outcome:
    """Run ``spec`` (after its BF16 reference, when that is not cached) unless the store already holds it
    and ``run.force`` is off. A second process running the same cell at once waits for the first, then
    skips it. ``on_stage(name)`` hears every stage the cell (and its reference cell) enters."""
    started = time.perf_counter()
    ident = resume.identify(spec)
    store = open_store(spec.run["store"], echo)
    with store.claim(ident.key, on_wait=lambda: echo(f"waiting: another process is running {spec.label()}")):
        if not spec.run["force"] and store.has(ident.key):
            echo(f"skip (already stored; run.force=true re-runs): {spec.label()}")
            return Outcome(None, skipped="stored")
        warmed = prefork.warm(spec, ident.device_type)
        if warmed["cuda_initialised"] or warmed["fork_poisoned"]:
            if not isolate.spawned_from_now_on():
                echo("warning: an import asked the CUDA runtime in the parent process, so a forked cell could "
                     "not use CUDA; cells are spawned from now on, and import everything again")
            isolate.spawn_from_now_on()
        ref_key = reference.reference_key(spec, ident.hardware, {k: ident.versions[k] for k in resume.CORE})
        problems: list[str] = []
        t_ref = time.perf_counter()
        computed = reference.ensure(spec, ref_key, lambda ref: problems.extend(
            _run_reference(ref, ref_key, Path(run_dir) / "reference", store, echo, on_stage)))
        floor_key = floor.key(spec, ref_key)
        computed |= floor.ensure(spec, floor_key, lambda cell: problems.extend(
            _run_floor(cell, ref_key, floor_key, Path(run_dir) / "floor", store, echo, on_stage)))
        reference_s = time.perf_counter() - t_ref if computed else 0.0

        parent_s = time.perf_counter() - started - reference_s
        record = _measure(spec, ident, ref_key, run_dir, save_reference=spec.is_reference, on_stage=on_stage,
                          floor_key=floor_key if floor.is_floor(spec) else None)
        floor.settle(record, spec, floor_key)
        record.metrics.overhead["parent_s"] = parent_s
        record.metrics.overhead["imports_s"] = warmed["seconds"]
        record.metrics.harness_overhead_s = harness_overhead(record, time.perf_counter() - started - reference_s)
        data = record.to_dict()
        saved = persist.save(data, run_dir, store, once=not spec.run["force"])
    return Outcome(data, saved, problems=problems + list(saved.problems))


class UnavailableStore:
    """Stands in for a store that failed to open mid-sweep: the cell still runs, its record stays in its
    result.json, and every write reports why it was not stored."""

    def __init__(self, location: str, reason: str):
        self.location, self.reason = location, reason

    @contextlib.contextmanager
    def claim(self, cell_key: str, on_wait=None):
        yield

    def has(self, cell_key: str) -> bool:
        return False

    def append(self, record: dict) -> int:
        raise StoreError(self.reason)

    append_once = append

    def __repr__(self) -> str:
        return f"UnavailableStore({self.location!r})"


def open_store(location: str, echo):
    """The result store, or an `UnavailableStore` when it cannot be opened any more (disk full, server gone)."""
    try:
        return ResultStore(location)
    except Exception as exc:  # noqa: BLE001 - sqlite3 / psycopg / OS errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = f"the store could not be opened ({type(exc).__name__}: {first})"
        echo(f"warning: {reason}; the cell runs and its record stays in its result.json")
        return UnavailableStore(location, reason)


def already_stored(spec: CellSpec) -> dict | None:
    """``spec``'s stored record when the store holds one and ``run.force`` is off; opens no store that does not
    exist, and a store that cannot be read counts as holding none (the run then says why)."""
    from harness.store import is_postgres_url

    location = spec.run["store"]
    if spec.run["force"] or not (is_postgres_url(location) or Path(location).is_file()):
        return None
    try:
        return ResultStore(location).latest(resume.identify(spec).key)
    except Exception:  # noqa: BLE001 - the run reports the store's problem itself
        return None


def _measure(spec: CellSpec, ident: resume.Identity, ref_key: str, run_dir: str, save_reference: bool,
             on_stage=None, floor_key: str | None = None) -> Record:
    from harness.cell import CellJob, measure

    job = CellJob(spec, run_dir, ref_key, save_reference=save_reference, floor_key=floor_key)
    outcome = isolate.in_child(measure, job,
                               spec.run["timeout_s"], on_stage=on_stage)
    record = Record.assemble(spec, ident.key, outcome, run_dir, ident.parent_env())
    timing = outcome.get("timing") or {}
    stages = timing.get("stages_s") or {}
    record.metrics.overhead = {**record.metrics.overhead, "reap_s": timing.get("reap_s"),
                               "start_s": timing.get("start_s"), "setup_s": stages.get("set-up"),
                               "compare_s": stages.get("compare")}
    record.metrics.stages_s = stages
    return record


def _run_reference(ref: CellSpec, ref_key: str, ref_dir: Path, store, echo, on_stage=None) -> list[str]:
    """Compute the BF16 reference images in their own isolated cell, stored as the bf16 cell it is."""
    echo(f"computing BF16 reference images: {ref.label()}")
    ident = resume.identify(ref)
    record = _measure(ref, ident, ref_key, str(ref_dir), save_reference=True,
                      on_stage=None if on_stage is None else (lambda name: on_stage(f"BF16 reference: {name}")))
    saved = persist.save(record.to_dict(), str(ref_dir), store, once=not ref.run["force"])
    if record.status != "ok":
        echo(f"reference run ended with status {record.status}: {record.error.message if record.error else ''}")
    return list(saved.problems)


def _run_floor(cell: CellSpec, ref_key: str, floor_key: str, floor_dir: Path, store, echo,
               on_stage=None) -> list[str]:
    """Compute the noise floor ``floor_key`` in its own isolated BF16 cell, stored as the bf16 cell it is."""
    echo(f"computing the noise floor: {cell.label()}")
    ident = resume.identify(cell)
    record = _measure(cell, ident, ref_key, str(floor_dir), save_reference=False, floor_key=floor_key,
                      on_stage=None if on_stage is None else (lambda name: on_stage(f"noise floor: {name}")))
    floor.settle(record, cell, floor_key)
    saved = persist.save(record.to_dict(), str(floor_dir), store, once=not cell.run["force"])
    if record.status != "ok":
        echo(f"noise floor run ended with status {record.status}: {record.error.message if record.error else ''}")
    return list(saved.problems)


def harness_overhead(record: Record, total_s: float) -> float | None:
    """Seconds of this cell spent on anything but loading + quantizing and generating (with a LoRA: also
    loading it, and the generation without it): validation, isolation, environment capture, quality
    metrics, writing images and records. (A BF16 reference computed for the cell is a cell of its own and
    is not counted.)"""
    m = record.metrics
    if m.load_s is None or m.s_per_image is None:
        return None
    work = m.load_s + (m.first_call_s or 0) + m.s_per_image * (m.n_timed_calls or 1)
    lora = record.lora_report
    if lora is not None:  # the same cell's generation without the LoRA, and loading the LoRA, are work too
        work += ((lora.load_s or 0) + (lora.first_call_s_without or 0)
                 + (lora.s_per_image_without or 0) * (m.n_timed_calls or 1))
    total = max(0.0, total_s - work)
    known = sum(m.overhead.get(k) or 0 for k in ("parent_s", "reap_s", "start_s", "setup_s", "compare_s"))
    m.overhead["other_s"] = max(0.0, total - known)
    return total
