"""The family sweep (sweep_families.py: every tiny family x the cells of families.py) in a subprocess,
started by the first test that asks for it so that it runs beside the in-process tests on the other core."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: About 45 s on an idle 2-core machine; 3x that busy, plus a margin.
SWEEP_TIMEOUT_S = 600


class FamilySweep:
    def __init__(self, cache_dir: Path, work: Path):
        self.store, self.log = work / "results.sqlite", work / "sweep.log"
        self.deadline = time.monotonic() + SWEEP_TIMEOUT_S
        with open(self.log, "w") as out:  # a file, not a pipe: a forked cell left behind cannot block a wait
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.harness.models.sweep_families", str(cache_dir),
                                          str(self.store), str(work / "runs")], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        self._records = None

    def records(self) -> dict:
        """{(model, cell id): record} once the sweep has ended; fails the caller past the deadline."""
        if self._records is not None:
            return self._records
        from harness.store import ResultStore

        try:
            self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the family sweep exceeded {SWEEP_TIMEOUT_S} s; its log: {self.log}", pytrace=False)
        except BaseException:
            self.stop()
            raise
        assert self.proc.returncode == 0, self.log.read_text(errors="replace")[-3000:]
        by_dir = {Path(r["run_dir"]).name: r for r in ResultStore(self.store).records() if r.get("run_dir")}
        self._records = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("CELL "):
                _, model, cid, _status = line.split(" ", 3)
                self._records[(model, cid)] = by_dir.get(f"{model}-{cid}")
        return self._records

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def family_sweep(cache_dir, tmp_path_factory):
    sweep = FamilySweep(cache_dir, tmp_path_factory.mktemp("family-sweep"))
    yield sweep
    sweep.stop()
