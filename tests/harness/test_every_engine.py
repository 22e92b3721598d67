"""Every registered engine x dtype, through the whole harness, on both tiny models (CPU).

A cell must end `ok` (weights really smaller, modules really converted) or `unsupported` with a
reason; never `error`. The sweep runs once per session in a clean subprocess (see sweep_every_engine.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import ResultStore
from tests.harness.sweep_every_engine import CELLS, MODELS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records(tmp_path_factory, cache_dir):
    work = tmp_path_factory.mktemp("every-engine")
    store = work / "results.sqlite"
    proc = subprocess.run([sys.executable, "-m", "tests.harness.sweep_every_engine", str(cache_dir),
                           str(store), str(work / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(r["model"], r["engine"], r["dtype"]): r for r in ResultStore(store).records()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("engine, dtype", CELLS, ids=[f"{e}-{d}" for e, d in CELLS])
def test_cell_is_ok_or_declared_unsupported(records, model, engine, dtype):
    record = records[(model, engine, dtype)]
    assert record["status"] in ("ok", "unsupported"), record["error"]
    if record["status"] == "unsupported":
        assert record["error"]["reason"]
        return
    m = record["metrics"]
    assert m["steps_per_s"] > 0 and m["weight_gib"] > 0
    if engine != "bf16":
        assert m["weight_gib"] < 0.8 * m["reference_weight_gib"], m
        assert all(c["quantized_modules"] > 0 for c in record["engine_report"]["components"].values())
        assert record["quality"]["psnr_db"] is not None and record["quality"]["psnr_db"] > 5
