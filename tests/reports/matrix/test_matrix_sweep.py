"""The matrix end to end: the experiments compose, a CPU matrix sweep on tiny FLUX through the harness CLI
renders through ``python -m reports matrix``."""
import csv
import os
import subprocess
import sys

import pytest

from tests.reports.samples import MATRIX, store


def _python(*args, env=None, cwd=None, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.mark.parametrize("command", [["-m", "reports", "matrix"]], ids=["reports-matrix"])
def test_cli_renders_from_a_store(tmp_path, command):
    location = store(tmp_path / "s.sqlite", MATRIX)
    proc = _python(*command, "--store", location, "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "matrix.md").is_file() and (tmp_path / "out" / "matrix.csv").is_file()
    missing = _python(*command, "--store", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "no result store" in missing.stderr


@pytest.mark.parametrize("experiment", ["matrix", "matrix-cpu"])
def test_matrix_experiments_compose(compose, experiment):
    from harness.validate import validate

    cfg = compose([f"+experiment={experiment}"])
    assert cfg.workload.warmup == 0 and cfg.metrics.save_images is False
    validate(cfg)


@pytest.mark.timeout(360)  # ~15-22 s idle (16 cells): 3x that busy, with a margin (its cli call gets 300 s)
def test_cpu_matrix_sweep_then_report(cli, tmp_path, store_path):
    """The CI-sized matrix end to end: sweep (isolated cells) -> store -> matrix.md / matrix.csv."""
    proc = cli("+experiment=matrix-cpu", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "HARNESS_STORE": str(store_path)}
    out = tmp_path / "matrix"
    report = _python("-m", "reports", "matrix", "--out", str(out), env=env)
    assert report.returncode == 0, report.stderr
    with open(out / "matrix.csv") as fh:
        rows = {(r["engine"], r["dtype"], r["offload"]): r for r in csv.DictReader(fh)}
    # 4 engine:dtype x 2 offload modes; bf16:int8, torchao:bf16, ... were skipped by the sweep
    assert len(rows) == 8
    assert {r["status"] for k, r in rows.items() if k[2] == "none"} == {"ok"}
    balanced = [r for k, r in rows.items() if k[2] == "balanced"]
    assert {r["status"] for r in balanced} == {"unsupported"} and len({r["error_group"] for r in balanced}) == 1
    md = (out / "matrix.md").read_text()
    assert "## flux-tiny on" in md and "64x64 px, 2 steps" in md and "| quanto:int8 | ok | unsupported U1" in md
