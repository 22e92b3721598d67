"""Every registered engine x dtype, through the whole harness, on both tiny models (CPU).

A cell must end `ok` (weights really smaller, modules really converted) or `unsupported` with a
reason; never `error`. Runs in-process through `harness.runner` (each cell still forks)."""
import pytest

from engines.registry import available, get_engine_class

CELLS = [(engine, dtype) for engine in available() if engine not in ("fault",)
         for dtype in get_engine_class(engine).dtypes]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return tmp_path_factory.mktemp("every-engine") / "results.sqlite"


@pytest.mark.parametrize("model", ["flux-tiny", "sdxl-tiny"])
@pytest.mark.parametrize("engine, dtype", CELLS, ids=[f"{e}-{d}" for e, d in CELLS])
def test_cell_is_ok_or_declared_unsupported(compose, cache_dir, shared_store, tmp_path, model, engine, dtype):
    from harness import runner
    from harness.validate import validate

    cell = validate(compose([f"model={model}", f"engine={engine}", f"dtype={dtype}", f"run.cache_dir={cache_dir}",
                             f"run.store={shared_store}", "workload.height=64", "workload.width=64",
                             "workload.steps=2", "metrics.save_images=false", "metrics.lpips=false",
                             "metrics.clip=false", "run.device=cpu"]))
    record = runner.run(cell, str(tmp_path / "run"), echo=lambda *_: None)
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
