import multiprocessing as mp

from harness.store import ResultStore


def _record(key, status="ok", **extra):
    return {"cell_key": key, "status": status, "model": "m", "engine": "e", "dtype": "d", "offload": "none",
            "compile": "none", "env": {"device_name": "cpu"}, **extra}


def test_append_has_and_latest(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    assert not store.has("k1")
    store.append(_record("k1", value=1))
    store.append(_record("k1", value=2))
    store.append(_record("k2", status="error"))
    assert store.has("k1") and store.count() == 3
    latest = {r["cell_key"]: r for r in store.records()}
    assert latest["k1"]["value"] == 2 and latest["k2"]["status"] == "error"
    assert len(list(store.records(latest_only=False))) == 3


def _writer(path, worker, n):
    store = ResultStore(path)
    for i in range(n):
        store.append(_record(f"w{worker}-{i}"))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultStore(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    keys = [r["cell_key"] for r in ResultStore(path).records(latest_only=False)]
    assert len(keys) == 100 and len(set(keys)) == 100
