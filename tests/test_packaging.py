"""The harness as an installed package: a wheel built from this checkout, installed into a fresh virtual
environment that reuses the test environment's libraries, runs from a folder outside the checkout."""
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a venv holding only the wheel (plus, through system site-packages, its dependencies)."""
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("*.whl"))
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return python


def _run(python, *args, cwd, env=None, timeout=900):
    import os

    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_wheel_runs_from_any_folder(installed, tmp_path, cache_dir):
    where = _run(installed, "-c", "import harness, conf, engines, reports; print(harness.__file__, conf.__file__)",
                 cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout  # the installed copy, not the checkout

    listing = _run(installed, "-m", "harness", "list", cwd=tmp_path)
    assert listing.returncode == 0 and "torchao" in listing.stdout and "high_watermark" in listing.stdout

    store = tmp_path / "results.sqlite"
    env = {"HARNESS_STORE": str(store), "HARNESS_CACHE": str(cache_dir)}
    cell = _run(installed, "-m", "harness", cwd=tmp_path, env=env)
    assert cell.returncode == 0, cell.stderr[-3000:]
    assert "torchao:int8" in cell.stdout and list((tmp_path / "outputs").rglob("result.json"))

    board = _run(installed, "-m", "reports", "--store", str(store), "--out", str(tmp_path / "board"),
                 "--no-images", cwd=tmp_path)
    assert board.returncode == 0, board.stderr[-2000:]
    assert (tmp_path / "board" / "leaderboard.md").is_file() and (tmp_path / "board" / "matrix.md").is_file()
