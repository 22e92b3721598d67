"""The result store every run appends to: an embedded SQLite file, or a PostgreSQL database for many hosts.

``ResultStore(location)`` opens either: a path is an SQLite file, a ``postgresql://`` (or ``postgres://``)
URL a PostgreSQL database (psycopg 3; the schema is created on first use). Both have the same interface:
``append``, ``has``, ``records``, ``count``.

SQLite: each record is written in one transaction (WAL journal, busy timeout), so several worker processes
on one host can append at once and a process killed mid-sweep leaves every earlier record intact.
PostgreSQL: each record is one committed INSERT carrying a unique ``record_id``; an append that loses its
connection is retried, and the unique id makes the retry a no-op when the first attempt had committed, so
concurrent writers on any number of hosts neither lose nor duplicate a record.

A record is keyed by its ``cell_key`` (config + library versions + hardware) so a sweep can resume.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
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

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id BIGSERIAL PRIMARY KEY,
    record_id TEXT NOT NULL UNIQUE,
    cell_key TEXT NOT NULL,
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT, engine TEXT, dtype TEXT, offload TEXT, compile TEXT, device TEXT,
    record JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_cell_key ON results (cell_key);
"""
#: Serialises schema creation among processes starting at once (CREATE ... IF NOT EXISTS can race).
PG_SCHEMA_LOCK = 0x68617273  # "hars"
PG_URL_PREFIXES = ("postgresql://", "postgres://")
PG_RETRIES = 5


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(PG_URL_PREFIXES)


def _row(record: dict) -> tuple:
    return (record["cell_key"], record.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            record["status"], record.get("model"), record.get("engine"), record.get("dtype"),
            record.get("offload"), record.get("compile"), (record.get("env") or {}).get("device_name"))


class ResultStore:
    """Append-only store of result records (dicts shaped like result.json).

    ``ResultStore(path)`` is SQLite; ``ResultStore("postgresql://...")`` returns a `PostgresResultStore`."""

    def __new__(cls, location: str | Path):
        if cls is ResultStore and is_postgres_url(location):
            return super().__new__(PostgresResultStore)
        return super().__new__(cls)

    def __init__(self, location: str | Path):
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

    def append(self, record: dict) -> int:
        """Write one record atomically; return its row id."""
        row = (*_row(record), json.dumps(record, sort_keys=True, default=str))
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


class PostgresResultStore(ResultStore):
    """The same store in PostgreSQL: one database shared by workers on many hosts.

    The URL is libpq's (``postgresql://user:pass@host:port/db?options=-csearch_path%3Dschema``); the table
    ``results`` is created in the connection's schema on first use."""

    def __init__(self, location: str):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("a postgresql:// store needs psycopg 3: pip install 'psycopg[binary]>=3.1'") from exc
        self.location = location
        self.path = None
        with closing(self._connect()) as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
            for statement in filter(str.strip, PG_SCHEMA.split(";")):
                db.execute(statement)

    def _connect(self):
        import psycopg

        for attempt in range(PG_RETRIES):
            try:
                return psycopg.connect(self.location, autocommit=True, connect_timeout=30)
            except psycopg.OperationalError:
                if attempt == PG_RETRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def append(self, record: dict) -> int:
        """Write one record in one committed INSERT; return its row id. Retried on a lost connection: the
        record's unique id makes a retry after an unacknowledged commit a no-op, never a duplicate."""
        import psycopg
        from psycopg.types.json import Jsonb

        record_id = uuid.uuid4().hex
        blob = json.loads(json.dumps(record, sort_keys=True, default=str))
        row = (record_id, *_row(record), Jsonb(blob))
        for attempt in range(PG_RETRIES):
            try:
                with closing(self._connect()) as db:
                    db.execute("INSERT INTO results (record_id, cell_key, created, status, model, engine, dtype,"
                               " offload, compile, device, record) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                               " ON CONFLICT (record_id) DO NOTHING", row)
                    return int(db.execute("SELECT id FROM results WHERE record_id = %s",
                                          (record_id,)).fetchone()[0])
            except psycopg.OperationalError:
                if attempt == PG_RETRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def has(self, cell_key: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM results WHERE cell_key = %s LIMIT 1",
                              (cell_key,)).fetchone() is not None

    def records(self, latest_only: bool = True) -> Iterator[dict]:
        query = "SELECT record FROM results"
        if latest_only:
            query += " WHERE id IN (SELECT MAX(id) FROM results GROUP BY cell_key)"
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY id").fetchall()
        for (blob,) in rows:
            yield blob if isinstance(blob, dict) else json.loads(blob)

    def count(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redact(self.location)!r})"


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"
