"""The result store, SQLite and PostgreSQL: same interface, nothing lost or duplicated by concurrent writers.

The PostgreSQL cases need a server: ``source scripts/ci_services.sh`` starts one on loopback and exports
HARNESS_TEST_POSTGRES_URL; without it they skip. Each test gets its own schema in that database.
"""
import multiprocessing as mp
import os
import uuid
from urllib.parse import quote

import pytest

from harness.store import PostgresResultStore, ResultStore, is_postgres_url

PG_URL = os.environ.get("HARNESS_TEST_POSTGRES_URL")


def _record(key, status="ok", **extra):
    return {"cell_key": key, "status": status, "model": "m", "engine": "e", "dtype": "d", "offload": "none",
            "compile": "none", "env": {"device_name": "cpu"}, **extra}


def postgres_schema_url(base_url: str) -> str:
    """A fresh schema in the test database; the URL selects it through libpq's ``options``."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "r.sqlite")
    if not PG_URL:
        pytest.skip("HARNESS_TEST_POSTGRES_URL not set (source scripts/ci_services.sh to start a server)")
    return postgres_schema_url(PG_URL)


def test_location_picks_the_backend(tmp_path):
    assert type(ResultStore(tmp_path / "r.sqlite")) is ResultStore
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url(str(tmp_path / "postgresql.sqlite"))


def test_append_has_and_latest(location):
    store = ResultStore(location)
    assert not store.has("k1")
    store.append(_record("k1", value=1))
    store.append(_record("k1", value=2))
    store.append(_record("k2", status="error"))
    assert store.has("k1") and store.count() == 3
    latest = {r["cell_key"]: r for r in store.records()}
    assert latest["k1"]["value"] == 2 and latest["k2"]["status"] == "error"
    assert len(list(store.records(latest_only=False))) == 3
    # A second handle (another worker) sees the same rows; opening it again does not touch them.
    assert ResultStore(location).count() == 3


def _writer(location, worker, n):
    store = ResultStore(location)
    for i in range(n):
        store.append(_record(f"w{worker}-{i}", payload={"worker": worker, "i": i}))


def test_concurrent_writers_lose_nothing(location):
    ResultStore(location)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(location, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    records = list(ResultStore(location).records(latest_only=False))
    keys = [r["cell_key"] for r in records]
    assert len(keys) == 100 and len(set(keys)) == 100
    assert all(r["payload"]["i"] == int(r["cell_key"].split("-")[1]) for r in records)


def test_concurrent_first_use_creates_the_schema_once(location):
    """Workers starting together against an empty database all create-if-missing the table."""
    procs = [mp.get_context("spawn").Process(target=_writer, args=(location, w, 1)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    assert ResultStore(location).count() == 6


@pytest.mark.skipif(not PG_URL, reason="HARNESS_TEST_POSTGRES_URL not set")
def test_postgres_retry_after_lost_acknowledgement_does_not_duplicate(monkeypatch):
    """The INSERT commits but the connection drops before the client hears it: the retry is a no-op."""
    import psycopg

    store = ResultStore(postgres_schema_url(PG_URL))
    assert isinstance(store, PostgresResultStore)
    real_connect = store._connect
    failures = {"left": 1}

    class LosesAck:
        def __init__(self, db):
            self.db = db

        def execute(self, query, params=None):
            cur = self.db.execute(query, params)
            if query.startswith("INSERT") and failures["left"]:
                failures["left"] -= 1
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return cur

        def close(self):
            self.db.close()

    monkeypatch.setattr(store, "_connect", lambda: LosesAck(real_connect()))
    monkeypatch.setattr("harness.store.postgres.time.sleep", lambda s: None)
    row_id = store.append(_record("k1"))
    assert failures["left"] == 0 and store.count() == 1
    assert [r["cell_key"] for r in store.records()] == ["k1"] and row_id >= 1


def test_record_round_trips_through_json(location):
    record = _record("k", metrics={"steps_per_s": 1.25, "peak_mem_gib": None}, images=["/a.png"],
                     error={"type": "X", "message": "it's \"quoted\" ünïcode"})
    store = ResultStore(location)
    store.append(record)
    assert next(store.records()) == record
