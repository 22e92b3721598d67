"""The result store: an embedded SQLite database every run appends to.

Each record is written in one transaction (WAL journal, busy timeout), so several worker processes
can append at once and a process killed mid-sweep leaves every earlier record intact. A record is
keyed by its `cell_key` (config + library versions + hardware) so a sweep can resume.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cell_key TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT, engine TEXT, dtype TEXT, offload TEXT, compile TEXT, device TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_cell_key ON results (cell_key);
"""


class ResultStore:
    """Append-only store of result records (dicts shaped like result.json)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=60000")
        return db

    def append(self, record: dict) -> int:
        """Write one record atomically; return its row id."""
        row = (record["cell_key"], record.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"),
               record["status"], record.get("model"), record.get("engine"), record.get("dtype"),
               record.get("offload"), record.get("compile"), (record.get("env") or {}).get("device_name"),
               json.dumps(record, sort_keys=True, default=str))
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute("INSERT INTO results (cell_key, created, status, model, engine, dtype, offload,"
                                 " compile, device, record) VALUES (?,?,?,?,?,?,?,?,?,?)", row)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return int(cur.lastrowid)

    def has(self, cell_key: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM results WHERE cell_key = ? LIMIT 1", (cell_key,)).fetchone() is not None

    def records(self, latest_only: bool = True) -> Iterator[dict]:
        """Stored records, oldest first; with ``latest_only`` one (the newest) per cell_key."""
        query = "SELECT record FROM results"
        if latest_only:
            query += " WHERE id IN (SELECT MAX(id) FROM results GROUP BY cell_key)"
        with closing(self._connect()) as db:
            for (blob,) in db.execute(query + " ORDER BY id"):
                yield json.loads(blob)

    def count(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
