"""The Hydra entry point: compose -> validate -> run (isolated) -> store -> print."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import register

register()


def _engine_dtype(engine: str, dtype) -> str:
    """Run-directory names show the dtype a run really uses (the engine default when dtype is null)."""
    if dtype not in (None, "None", "null", ""):
        return str(dtype)
    from engines.registry import ENGINES, get_engine_class

    return get_engine_class(engine).default_dtype if engine in ENGINES else "default"


OmegaConf.register_new_resolver("engine_dtype", _engine_dtype, replace=True)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def task(cfg: DictConfig):
    from harness import runner
    from harness.validate import ConfigError, validate

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        cell = validate(cfg)
    except ConfigError as exc:
        if multirun and "does not support dtype" in str(exc):
            # A sweep crossing engines with dtypes: combinations outside an engine's vocabulary are skipped.
            print(f"skip: {exc}")
            return None
        runner.fail(str(exc))
    run_dir = HydraConfig.get().runtime.output_dir
    record = runner.run(cell, run_dir)
    if record is None:
        return None
    if multirun:
        m = record["metrics"]
        print(f"[{record['status']}] {runner.describe(cell)} steps/s={m['steps_per_s']} "
              f"weight_gib={m['weight_gib']} psnr={record['quality'].get('psnr_db')}")
    else:
        print(runner.summary_table(record))
    sys.stdout.flush()
    return record["status"]
