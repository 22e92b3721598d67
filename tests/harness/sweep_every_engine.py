"""Run every engine x dtype cell on the tiny models through `harness.runner`, in a fresh process.

Used by test_every_engine.py as a subprocess: the parent of the forked cells must not have run torch
ops itself (a forked child of a process with a live OpenMP pool can deadlock), which the pytest process
cannot promise. Usage (from the repo root):
python -m tests.harness.sweep_every_engine CACHE_DIR STORE RUNS_DIR [RC_FILE]

`Sweep` is the pytest side: tests/conftest.py starts it when the session starts (when test_every_engine.py
is selected; under pytest-xdist in the first worker to get there), so that its cells run beside the other
tests, and test_every_engine.py, which runs last, collects its records.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]

#: The whole sweep (98 tiny cells): 130 s beside two pytest-xdist workers on an idle 2-core machine
#: (the VAE decoding in float32 there, `harness.cpu_vae`); a busy machine 3x slower, with a wide margin. It
#: bounds the sweep from its start, whichever test (or none) waits for it.
SWEEP_TIMEOUT_S = 900


class Sweep:
    """This script in a subprocess, writing to ``work``, which several pytest processes may share (the
    workers of pytest-xdist): the first to `claim` it starts the subprocess; `records` waits for its end,
    from any of them, through the files it leaves (``rc`` holds its exit status)."""

    def __init__(self, cache_dir: Path, work: Path):
        self.cache_dir, self.work = cache_dir, work
        self.store, self.log, self.rc = work / "results.sqlite", work / "sweep.log", work / "rc"
        self.deadline_file = work / "deadline"
        self.proc = None

    def claim(self) -> bool:
        """Start the sweep unless another process sharing ``work`` already did; True if this one did."""
        try:
            os.close(os.open(self.work / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        self.deadline_file.write_text(str(time.time() + SWEEP_TIMEOUT_S))
        # Output to a file, not a pipe: a forked cell left behind cannot keep a wait from returning.
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.harness.sweep_every_engine",
                                          str(self.cache_dir), str(self.store), str(self.work / "runs"),
                                          str(self.rc)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return True

    def _left(self) -> float:
        try:
            return float(self.deadline_file.read_text()) - time.time()
        except (OSError, ValueError):
            return float(SWEEP_TIMEOUT_S)

    def wait(self) -> bool:
        """Wait until the sweep has ended or its deadline has passed; True if it ended."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(1.0, self._left()))
            except subprocess.TimeoutExpired:
                return False
            return True
        while not self.rc.exists():
            if self._left() <= 0:
                return False
            time.sleep(0.5)
        return True

    def records(self) -> dict:
        """{(model, engine, dtype): record} once the sweep has ended; fails the caller past the deadline."""
        import pytest

        from harness.store import ResultStore

        try:
            ended = self.wait()
        except BaseException:  # a pytest-timeout backstop or Ctrl-C: leave no sweep running
            self.stop()
            raise
        if not ended:
            self.stop()
            done = sum(1 for line in self.log.read_text(errors="replace").splitlines() if line.startswith(MODELS))
            pytest.fail(f"the every-engine sweep exceeded {SWEEP_TIMEOUT_S} s ({done} of {len(MODELS) * len(CELLS)} "
                        f"cells done); its log: {self.log}", pytrace=False)
        status = self.proc.returncode if self.proc is not None else int(self.rc.read_text() or 1)
        assert status == 0, self.log.read_text(errors="replace")[-3000:]
        return {(r["model"], r["engine"], r["dtype"]): r for r in ResultStore(self.store).records()}

    def stop(self) -> None:
        """End the sweep and every cell it forked (each cell runs in a process group of its own), if this
        process started it."""
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        self.proc.wait()


if __name__ == "__main__":
    status = 1
    try:
        main(*sys.argv[1:4])
        status = 0
    finally:
        if len(sys.argv) > 4:  # the exit status, for pytest processes that did not start this one
            Path(sys.argv[4]).write_text(str(status))
