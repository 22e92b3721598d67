"""The store step: a record goes to its run directory's ``result.json`` and to the result store.

Each write is atomic (a temp file renamed into place; one store transaction). When one of the two fails
(disk full, lost connection) the other is still made and `Saved` says where the record is, so a sweep
can list every cell whose record could not be stored. Nothing half-written is left behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.record import clean


@dataclass
class Saved:
    result_json: str | None = None
    store_row: int | None = None
    #: True when the store already held a record of this cell key (nothing appended).
    duplicate: bool = False
    problems: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems


def write_json(data: dict, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a file, and a failed write leaves
    no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".result-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(clean(data), fh, indent=1, sort_keys=True, default=str)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def save(record: dict, run_dir: str, store, once: bool) -> Saved:
    """``record`` into ``run_dir/result.json`` and ``store`` (with ``once``: unless the store already has a
    record of its cell key)."""
    saved = Saved()
    problems = []
    target = Path(run_dir) / "result.json"
    try:
        saved.result_json = str(write_json(record, target))
    except OSError as exc:
        problems.append(f"result.json not written ({target}: {exc.strerror or exc})")
    try:
        row = store.append_once(clean(record)) if once else store.append(clean(record))
        saved.store_row, saved.duplicate = row, row is None
    except Exception as exc:  # noqa: BLE001 - any store failure: the record survives in result.json
        where = f"kept in {saved.result_json}" if saved.result_json else "not kept anywhere"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(f"not stored in {store!r} ({type(exc).__name__}: {first}); record {where}")
    saved.problems = tuple(problems)
    return saved
