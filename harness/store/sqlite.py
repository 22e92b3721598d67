"""The SQLite store (the default), and the `ResultStore` front that opens either kind.

Each record is written in one transaction (WAL journal, busy timeout), so several worker processes on
one host can append at once and a process killed mid-sweep leaves every earlier record intact. A claim
on a cell key is an ``flock`` on ``<store>.claims/<key>``: the kernel releases it when its process dies.
"""
from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from contextlib import closing, contextmanager
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
PG_URL_PREFIXES = ("postgresql://", "postgres://")
INSERT = ("INSERT INTO results (cell_key, created, status, model, engine, dtype, offload, compile, device, record)"
          " VALUES (?,?,?,?,?,?,?,?,?,?)")


def is_postgres_url(location) -> bool:
    return isinstance(location, str) and location.startswith(PG_URL_PREFIXES)


def redact(url: str) -> str:
    """A store location fit for messages: a URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"


def row(record: dict) -> tuple:
    """The indexed columns of a record's row."""
    return (record["cell_key"], record.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            record["status"], record.get("model"), record.get("engine"), record.get("dtype"),
            record.get("offload"), record.get("compile"), (record.get("env") or {}).get("device_name"))


class ResultStore:
    """Append-only store of result records (dicts shaped like result.json).

    ``ResultStore(path)`` is SQLite; ``ResultStore("postgresql://...")`` returns a
    `harness.store.postgres.PostgresResultStore`. Opening creates the store when it does not exist."""

    def __new__(cls, location):
        if cls is ResultStore and is_postgres_url(location):
            from harness.store.postgres import PostgresResultStore

            return super().__new__(PostgresResultStore)
        return super().__new__(cls)

    def __init__(self, location):
        self.location = str(location)
        self.path = Path(location)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=60000")
        return db

    def _insert(self, record: dict, once: bool) -> int | None:
        values = (*row(record), json.dumps(record, sort_keys=True, default=str))
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if once and db.execute("SELECT 1 FROM results WHERE cell_key = ? LIMIT 1",
                                       (record["cell_key"],)).fetchone():
                    db.execute("ROLLBACK")
                    return None
                cur = db.execute(INSERT, values)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original failure is the one to report
                raise
            return int(cur.lastrowid)

    def append(self, record: dict) -> int:
        """Write one record atomically; return its row id."""
        return self._insert(record, once=False)

    def append_once(self, record: dict) -> int | None:
        """Write ``record`` unless a record of its cell key is stored; its row id, or None when skipped."""
        return self._insert(record, once=True)

    @contextmanager
    def claim(self, cell_key: str, on_wait=None):
        """Hold the cell key exclusively; ``on_wait()`` is called once if another process holds it first."""
        folder = self.path.parent / f"{self.path.name}.claims"
        folder.mkdir(exist_ok=True)
        with open(folder / cell_key, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def has(self, cell_key: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM results WHERE cell_key = ? LIMIT 1", (cell_key,)).fetchone() is not None

    def latest(self, cell_key: str) -> dict | None:
        """The newest record of ``cell_key``, or None."""
        with closing(self._connect()) as db:
            found = db.execute("SELECT record FROM results WHERE cell_key = ? ORDER BY id DESC LIMIT 1",
                               (cell_key,)).fetchone()
        return json.loads(found[0]) if found else None

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"
