"""Every registered engine x dtype, through the whole harness, on both tiny models (CPU).

A cell must end `ok` (weights really smaller, modules really converted) or `unsupported` with a
reason; never `error`. The sweep runs once per session in a clean subprocess (see sweep_every_engine.py)."""
import pytest

from tests.harness.sweep_every_engine import CELLS, MODELS

# The sweep is fixture work, bounded on its own (SWEEP_TIMEOUT_S in sweep_every_engine.py) and started with
# the session (tests/conftest.py: every_engine_sweep): it is not charged to whichever cell test happens to
# run first (func_only). A test itself only reads its record.
pytestmark = pytest.mark.timeout(60, func_only=True)


@pytest.fixture(scope="module")
def records(every_engine_sweep):
    """The sweep's records by (model, engine, dtype), once it has ended."""
    return every_engine_sweep.records()


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
