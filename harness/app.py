"""The Hydra task: one job of a run or a sweep. `harness.cli` has composed and validated every job before
Hydra writes anything; here a job validates again (cheap), runs through `harness.runner` and reports."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.paths import conf_dir
from harness.schema import register

register()

#: What each job of this process did (in-process launchers): `harness.runner.Outcome`.
OUTCOMES: list = []
#: The live progress of this process's cells (set up at the first job).
PROGRESS = None


def _progress():
    global PROGRESS
    if PROGRESS is None:
        import os

        from harness.console import Progress

        total = os.environ.get("HARNESS_SWEEP_CELLS")
        PROGRESS = Progress(total=int(total) if total and total.isdigit() else None)
    return PROGRESS


def _echo(progress, line: str) -> None:
    """A message while a cell runs: printed above the live line."""
    if progress._live is not None:
        progress._live.console.print(line, highlight=False, markup=False)
    else:
        print(line, flush=True)


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def task(cfg: DictConfig):
    from harness import console, isolate, runner
    from harness.errors import ConfigError, UnsupportedDtype
    from harness.validate import validate

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        spec = validate(cfg)
    except UnsupportedDtype as exc:
        if multirun:
            print(f"skip: {exc}")
            return None
        console.reject(str(exc))
    except ConfigError as exc:
        console.reject(str(exc))
    run_dir = HydraConfig.get().runtime.output_dir
    progress = _progress()
    progress.start(spec.label())
    try:
        outcome = runner.run(spec, run_dir, echo=lambda line: _echo(progress, line), on_stage=progress.stage)
    except Exception as exc:  # noqa: BLE001 - a harness failure: one line, the details in a log
        progress.end()
        line = console.harness_failure(exc, run_dir, exit=not multirun)
        OUTCOMES.append(runner.Outcome(None, problems=[line]))
        return None
    finally:
        isolate.reap()  # the cell's process has exited before the next job (or another worker) starts
    progress.end()
    OUTCOMES.append(outcome)
    for problem in outcome.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if outcome.record is not None:
        print(console.result_line(outcome.record) if multirun else console.summary_table(outcome.record))
    sys.stdout.flush()
    return outcome.record["status"] if outcome.record else None
