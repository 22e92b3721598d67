"""Run every engine x dtype cell on the tiny models through `harness.runner`, in a fresh process.

Used by test_every_engine.py as a subprocess: the parent of the forked cells must not have run torch
ops itself (a forked child of a process with a live OpenMP pool can deadlock), which the pytest process
cannot promise. Usage (from the repo root): python -m tests.harness.sweep_every_engine CACHE_DIR STORE RUNS_DIR
"""
import sys

from hydra import compose, initialize_config_dir

from engines.registry import available, get_engine_class
from harness import runner
from harness.schema import register
from harness.validate import validate
from tests.conftest import CONF

MODELS = ("flux-tiny", "sdxl-tiny")
CELLS = [(e, d) for e in available() if e != "fault" for d in get_engine_class(e).dtypes]


def main(cache_dir: str, store: str, runs_dir: str) -> None:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for model in MODELS:
            for engine, dtype in CELLS:
                cfg = compose(config_name="config", overrides=[
                    f"model={model}", f"engine={engine}", f"dtype={dtype}", f"run.cache_dir={cache_dir}",
                    f"run.store={store}", "workload.height=64", "workload.width=64", "workload.steps=2",
                    "metrics.save_images=false", "metrics.lpips=false", "metrics.clip=false", "run.device=cpu",
                    "run.timeout_s=300"])
                record = runner.run(validate(cfg), f"{runs_dir}/{model}-{engine}-{dtype}", echo=lambda *_: None).record
                print(model, engine, dtype, record["status"] if record else "stored", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
