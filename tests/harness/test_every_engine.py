"""Every registered engine x dtype, through the whole harness, on both tiny models (CPU).

A cell must end `ok` (weights really smaller, modules really converted) or `unsupported` with a
reason; never `error`. The sweep runs once per session in a clean subprocess (see sweep_every_engine.py)."""
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.store import ResultStore
from tests.harness.sweep_every_engine import CELLS, MODELS

ROOT = Path(__file__).resolve().parents[2]

#: The whole sweep (about 100 tiny cells): 1-2 min on an idle 2-core machine, about 8 min seen on a busy
#: one before the tests ran torch single-threaded; 3x the idle time plus a wide margin.
SWEEP_TIMEOUT_S = 1200

# The sweep is the fixture's work, bounded by SWEEP_TIMEOUT_S above: it is not charged to whichever cell
# test happens to run first (func_only). A test itself only reads its record.
pytestmark = pytest.mark.timeout(60, func_only=True)


def _kill_tree(proc: subprocess.Popen) -> None:
    """End the sweep and every cell it forked (each cell runs in its own process group)."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    proc.wait()


@pytest.fixture(scope="module")
def records(tmp_path_factory, cache_dir):
    """Run the sweep once (sharing the session's synthetic checkpoints); its records by cell."""
    work = tmp_path_factory.mktemp("every-engine")
    store, log = work / "results.sqlite", work / "sweep.log"
    # Output to a file, not a pipe: a forked cell left behind cannot keep the wait from returning.
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.harness.sweep_every_engine", str(cache_dir),
                                 str(store), str(work / "runs")], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=SWEEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            done = sum(1 for line in log.read_text(errors="replace").splitlines() if line.startswith(MODELS))
            pytest.fail(f"the every-engine sweep exceeded {SWEEP_TIMEOUT_S} s ({done} of "
                        f"{len(MODELS) * len(CELLS)} cells done); log: {log}", pytrace=False)
        except BaseException:  # a pytest-timeout backstop or Ctrl-C: leave no sweep running
            _kill_tree(proc)
            raise
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
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
