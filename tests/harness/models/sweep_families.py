"""Run the family cells (families.py) through `harness.runner`, in a fresh process.

Used by conftest.py's ``family_sweep`` as a subprocess: the parent of the forked cells must not have run
torch ops itself, which the pytest process cannot promise.
Usage (from the repo root): python -m tests.harness.models.sweep_families CACHE_DIR STORE RUNS_DIR
"""
import sys

from hydra import compose, initialize_config_dir

from harness import runner
from harness.schema import register
from harness.validate import validate
from tests.conftest import CONF
from tests.harness.models.families import WORKLOAD, cells


def main(cache_dir: str, store: str, runs_dir: str) -> None:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for (model, cid), overrides in cells().items():
            cfg = compose(config_name="config", overrides=[*overrides, *WORKLOAD, f"run.cache_dir={cache_dir}",
                                                           f"run.store={store}"])
            record = runner.run(validate(cfg), f"{runs_dir}/{model}-{cid}", echo=lambda *_: None).record
            print("CELL", model, cid, record["status"] if record else "stored", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
