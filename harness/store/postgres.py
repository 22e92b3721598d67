"""The PostgreSQL store: one database shared by workers on many hosts.

Each record is one committed INSERT carrying a unique ``record_id``; an append that loses its connection
is retried, and the unique id makes the retry a no-op when the first attempt had committed, so concurrent
writers on any number of hosts neither lose nor duplicate a record. A claim on a cell key is a session
advisory lock on a connection of its own: the server releases it when that connection ends.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from contextlib import closing, contextmanager
from typing import Iterator

from harness.store.sqlite import ResultStore, redact, row

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
PG_RETRIES = 5


def _lock_id(purpose: str, cell_key: str) -> int:
    """A signed 64-bit advisory-lock id for a cell key: one per purpose (the claim a run holds on its own
    connection, the short lock of an `append_once`), so the two never wait for each other."""
    return int.from_bytes(hashlib.sha256(f"{purpose}:{cell_key}".encode()).digest()[:8], "big", signed=True)


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

    def _insert(self, record: dict, once: bool) -> int | None:
        """One committed INSERT (with ``once``: only when no record of its cell key exists, checked under a
        transaction-level advisory lock on the key). Retried on a lost connection: the record's unique id
        makes a retry after an unacknowledged commit a no-op, never a duplicate."""
        import psycopg
        from psycopg.types.json import Jsonb

        record_id = uuid.uuid4().hex
        blob = json.loads(json.dumps(record, sort_keys=True, default=str))
        values = (record_id, *row(record), Jsonb(blob))
        insert = ("INSERT INTO results (record_id, cell_key, created, status, model, engine, dtype, offload,"
                  " compile, device, record) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                  " ON CONFLICT (record_id) DO NOTHING")
        for attempt in range(PG_RETRIES):
            try:
                with closing(self._connect()) as db:
                    if once:
                        with db.transaction():
                            if db.execute("SELECT id FROM results WHERE record_id = %s", (record_id,)).fetchone():
                                break
                            db.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id("append", record["cell_key"]),))
                            if db.execute("SELECT 1 FROM results WHERE cell_key = %s LIMIT 1",
                                          (record["cell_key"],)).fetchone():
                                return None
                            db.execute(insert, values)
                    else:
                        db.execute(insert, values)
                    return int(db.execute("SELECT id FROM results WHERE record_id = %s",
                                          (record_id,)).fetchone()[0])
            except psycopg.OperationalError:
                if attempt == PG_RETRIES - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
        else:
            raise AssertionError("unreachable")
        with closing(self._connect()) as db:  # committed by an attempt whose acknowledgement was lost
            return int(db.execute("SELECT id FROM results WHERE record_id = %s", (record_id,)).fetchone()[0])

    @contextmanager
    def claim(self, cell_key: str, on_wait=None):
        """Hold the cell key exclusively (a session advisory lock); ``on_wait()`` is called once if another
        process holds it first."""
        lock = _lock_id("claim", cell_key)
        db = self._connect()
        try:
            if not db.execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0]:
                if on_wait is not None:
                    on_wait()
                db.execute("SELECT pg_advisory_lock(%s)", (lock,))
            try:
                yield
            finally:
                try:
                    db.execute("SELECT pg_advisory_unlock(%s)", (lock,))
                except Exception:  # noqa: BLE001 - a lost connection has released the lock already
                    pass
        finally:
            db.close()

    def latest(self, cell_key: str) -> dict | None:
        """The newest record of ``cell_key``, or None."""
        with closing(self._connect()) as db:
            found = db.execute("SELECT record FROM results WHERE cell_key = %s ORDER BY id DESC LIMIT 1",
                               (cell_key,)).fetchone()
        if not found:
            return None
        return found[0] if isinstance(found[0], dict) else json.loads(found[0])

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
        return f"{type(self).__name__}({redact(self.location)!r})"
