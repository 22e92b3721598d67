"""The records every report reads: loaded from a result store once, and the keys reports group them by.

`load(location)` is the only place in `reports` that opens a store: the CLI calls it and hands the list to
the report modules, which take ``records: list[dict]`` and never open a store themselves. Each record is
normalised through `harness.record.Record`, so every key of the schema is present (null when unknown) and
keys the schema does not know are dropped.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from harness.record import Record
from harness.store import ResultStore, is_postgres_url, redact

#: Settings of the BF16 reference cell every quantized cell is compared with.
REFERENCE = {"engine": "bf16", "dtype": "bf16", "offload": "none", "compile": "none"}


class NoStore(FileNotFoundError):
    """There is no result store at the location given (nothing has been run into it yet)."""

    def __init__(self, location: str):
        self.location = location
        super().__init__(f"no result store at {location} (run a cell first, or pass --store)")


def load(location: str | Path) -> list[dict]:
    """The newest record of every cell key in the store at ``location`` (an SQLite file or a
    ``postgresql://`` URL), oldest first, each as `harness.record.Record` writes it.

    Raises `NoStore` when ``location`` is a path with no file (opening would create an empty store)."""
    location = str(location)
    if not is_postgres_url(location) and not Path(location).is_file():
        raise NoStore(location)
    raw = ResultStore(location).records()
    return [Record.from_dict(r).to_dict() for r in raw]


def source_label(location: str | Path) -> str:
    """The store as a page may name it: an SQLite file by its file name only (not the rendering machine's
    folders), a PostgreSQL URL without its password."""
    location = str(location)
    return redact(location) if is_postgres_url(location) else Path(location).name


def newest(records: list[dict], key) -> dict:
    """``key(record) -> the newest record with that key`` (by ``created``): a re-run replaces its cell."""
    out: dict = {}
    for r in sorted(records, key=lambda r: str(r.get("created") or "")):
        out[key(r)] = r
    return out


def device_of(record: dict) -> str:
    """The GPU (or CPU) name the record was measured on; ``unknown`` when the record lacks it."""
    return (record.get("env") or {}).get("device_name") or "unknown"


def groups(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """``(model, device) -> records`` (in the given order), sorted by model then device: every report has one
    section per such group."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        out[(r.get("model") or "unknown", device_of(r))].append(r)
    return dict(sorted(out.items()))


def is_reference(record: dict) -> bool:
    """Whether the record is the BF16 reference cell (no quantization, offload, compile or LoRA)."""
    return all(record.get(k) == v for k, v in REFERENCE.items()) and record.get("lora") in (None, "none")


def is_lora_reference(record: dict) -> bool:
    """Whether the record is BF16 with a LoRA (no quantization, offload or compile): the reference of the
    quantized cells with the same LoRA."""
    return all(record.get(k) == v for k, v in REFERENCE.items()) and record.get("lora") not in (None, "none")


def label(record: dict) -> str:
    """``engine:dtype`` plus ``pre`` / ``offload=`` / ``compile=`` / ``lora=`` when they are not the defaults."""
    from harness.console import lora_label

    text = f"{record.get('engine')}:{record.get('dtype')}"
    if record.get("mode") == "pre":
        text += " pre"
    if record.get("offload") not in (None, "none"):
        text += f" offload={record['offload']}"
    if record.get("compile") not in (None, "none"):
        text += f" compile={record['compile']}"
    return text + lora_label(record)
