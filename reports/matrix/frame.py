"""The matrix as a table: one row per combination that ran (its newest record), and its pivots for display.

A combination is model x device x engine x dtype x mode x offload x compile x LoRA (its label:
``none``, ``synthetic r16``, ...; a row of the pivots is ``engine:dtype`` plus its LoRA when it has one). Each row carries the status,
the exception type, the first line of the message and its normalized form, the stage the cell was in when
it failed, its error group (`reports.matrix.groups`) and the known issues that concern it with their
verdicts (`reports.matrix.known`). Missing values are None, never NaN.
"""
from __future__ import annotations

import re

import pandas as pd

from harness.status import normalize_message
from reports.matrix import groups as grouping
from reports.matrix.known import FAILURES, VERDICTS, applies, load_known_issues, marks, verdict
from reports.provenance import summary
from reports.columns import lora_label
from reports.records import device_of, newest

OFFLOAD_ORDER = ("none", "model", "sequential", "group", "balanced")
COMPILE_ORDER = ("none", "default", "max-autotune", "reduce-overhead", "regional", "cudagraph", "regional-cudagraph")
CELL_KEYS = ("model", "device", "engine", "dtype", "mode", "offload", "compile", "lora")
COLUMNS = [*CELL_KEYS, "status", "error_type", "message", "normalized", "stage", "error_group",
           "known_issues", "verdicts", "disagrees", "created"]


def cell_key(record: dict) -> tuple:
    """The combination a record measured (`CELL_KEYS`)."""
    return (record.get("model"), device_of(record), record.get("engine"), record.get("dtype"),
            record.get("mode") or "post", record.get("offload"), record.get("compile"), lora_label(record))


def latest(records: list[dict]) -> list[dict]:
    """One record per combination: the newest."""
    return list(newest(records, cell_key).values())


def matrix_frame(records: list[dict], known: list[dict] | None = None) -> pd.DataFrame:
    """One row per combination (`COLUMNS`), the reference engine first, then by engine, dtype, mode, and
    offload and compile modes in their natural order. ``known`` defaults to the shipped annotations."""
    known = load_known_issues() if known is None else known
    rows = []
    for r in latest(records):
        err = r.get("error") or {}
        message = err.get("message")
        rows.append(dict(zip(CELL_KEYS, cell_key(r)), status=r.get("status"), error_type=err.get("type"),
                         message=message,
                         normalized=err.get("normalized") or (normalize_message(message) if message else None),
                         stage=err.get("stage"), created=r.get("created")))
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    ids = grouping.group_ids(df.to_dict("records"))
    df["error_group"] = [ids.get(grouping.group_key(row)) for row in df.to_dict("records")]
    found = [[(k, verdict(k, row)) for k in known if applies(k, row)] for row in df.to_dict("records")]
    df["known_issues"] = [";".join(k["key"] for k, _ in m) or None for m in found]
    df["verdicts"] = [";".join(f"{k['key']}: {v}" for k, v in m) or None for m in found]
    df["disagrees"] = [any(VERDICTS[v][1] for _, v in m) for m in found]
    df = df.sort_values(list(CELL_KEYS), key=_order).reset_index(drop=True)[COLUMNS]
    return df.astype(object).where(df.notna(), None)


def _rank(order: tuple[str, ...]):
    return lambda v: (order.index(v) if v in order else len(order), v)


def _order(col: pd.Series) -> pd.Series:
    if col.name == "offload":
        return col.map(_rank(OFFLOAD_ORDER))
    if col.name == "compile":
        return col.map(_rank(COMPILE_ORDER))
    if col.name == "engine":  # the reference first
        return col.map(lambda v: (v != "bf16", v))
    if col.name == "lora":  # no LoRA first, then by rank
        return col.map(_lora_rank)
    return col


def _lora_rank(label: str):
    match = re.search(r" r(\d+)", label or "")
    return (label != "none", label.split(" ")[0] if label else "", int(match.group(1)) if match else 0, label)


def pivots(df: pd.DataFrame):
    """For one model x device part of the frame: ``(compile, offloads, rows)`` per compile mode, where
    ``rows`` maps ``engine:dtype`` (+ `` pre``, + `` lora=<label>``) to ``{offload: frame row}``."""
    for comp in sorted(df["compile"].unique(), key=_rank(COMPILE_ORDER)):
        part = df[df["compile"] == comp]
        offloads = sorted(part["offload"].unique(), key=_rank(OFFLOAD_ORDER))
        rows: dict[str, dict] = {}
        for row in part.to_dict("records"):
            name = f"{row['engine']}:{row['dtype']}" + (" pre" if row["mode"] == "pre" else "")
            if row["lora"] not in (None, "none"):
                name += f" lora={row['lora']}"
            rows.setdefault(name, {})[row["offload"]] = row
        yield comp, offloads, rows


def sections(records: list[dict], df: pd.DataFrame):
    """``(model, device, provenance, frame part)`` per model x device (sorted), the provenance as
    `provenance` gives it for the newest records of that section."""
    newest_records = latest(records)
    for model, device in sorted({(r.get("model"), device_of(r)) for r in newest_records},
                                key=lambda k: (str(k[0]), k[1])):
        part = [r for r in newest_records if r.get("model") == model and device_of(r) == device]
        yield model, device, provenance(part), df[(df["model"] == model) & (df["device"] == device)]


def provenance(records: list[dict]) -> list[tuple[str, str]]:
    """`reports.provenance.summary` as the matrix lists it: resolution and steps as one workload line that
    says its timings are no benchmark, and without the memory kind and the quality warning (the matrix
    shows neither memory nor quality)."""
    info = summary(records)
    workload = (f"{info.pop('resolution')}, {info.pop('steps')} steps: a small workload, this matrix answers "
                "*does it run*; its timings are not benchmarks")
    out = []
    for label, text in info.items():
        if label in ("memory", "warning"):
            continue
        if label == "GPU memory cap":
            text += " (cells may share a GPU; a cap keeps them apart)"
        out.append((label, text))
        if label == "weights":
            out.append(("workload", workload))
    return out


def status_counts(df: pd.DataFrame) -> str:
    """``3 ok, 1 unsupported, 2 error``: the statuses of a frame part, in taxonomy order."""
    counts = df["status"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("ok", "unsupported", *FAILURES) if s in counts)


def cell_text(row: dict) -> str:
    """A matrix cell: status, error group and the marks of the known issues (``error E1 [K1✓]``)."""
    text = row["status"]
    if row["error_group"]:
        text += f" {row['error_group']}"
    if row["verdicts"]:
        text += f" [{marks(row['verdicts'])}]"
    return text
