"""Resume after ``kill -9`` of the sweep process: finished cells are kept and skipped, the store is intact."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from harness.store import ResultStore

SWEEP = ["-m", "model=flux-tiny", "engine=bf16,torchao,quanto", "dtype=null,int8dq,int4", "run.device=cpu"]
CELLS = 6  # bf16; torchao int8, int8dq, int4; quanto int8, int4 (bf16 x int8dq/int4 and quanto x int8dq skip)


def _count(store_path) -> int:
    try:
        return ResultStore(store_path).count() if store_path.exists() else 0
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~25-40 s idle (6 cells, killed, resumed): 3x that busy, with a margin
def test_kill_9_mid_sweep_then_resume(tmp_path, cache_dir, store_path):
    env = {**os.environ, "HARNESS_STORE": str(store_path), "HARNESS_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "harness", *SWEEP, f"hydra.sweep.dir={tmp_path / 'first'}"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _count(store_path) < 2 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    cells = psutil.Process(sweep.pid).children(recursive=True)
    os.kill(sweep.pid, signal.SIGKILL)  # the sweep process itself, mid-sweep
    sweep.wait(30)
    for child in cells:  # the orphaned cell (if one was running) cannot report anywhere: end it too
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(cells, timeout=30)

    with sqlite3.connect(store_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = {r["cell_key"]: r for r in ResultStore(store_path).records(latest_only=False)}
    assert 2 <= len(kept) < CELLS, "the kill should land mid-sweep"
    assert all(r["status"] == "ok" for r in kept.values())

    rerun = subprocess.run([sys.executable, "-m", "harness", *SWEEP, f"hydra.sweep.dir={tmp_path / 'second'}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("skip (already stored") == len(kept)

    with sqlite3.connect(store_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = list(ResultStore(store_path).records(latest_only=False))
    keys = [r["cell_key"] for r in rows]
    assert len(keys) == len(set(keys)) == CELLS  # every cell once: none lost, none measured twice
    for r in rows:  # the cells finished before the kill are the same records, untouched
        if r["cell_key"] in kept:
            assert r == kept[r["cell_key"]]
    assert {(r["engine"], r["dtype"]) for r in rows} == {
        ("bf16", "bf16"), ("torchao", "int8"), ("torchao", "int8dq"), ("torchao", "int4"),
        ("quanto", "int8"), ("quanto", "int4")}
