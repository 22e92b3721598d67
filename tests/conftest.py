"""Shared fixtures: a session cache for synthetic checkpoints, the every-engine sweep (started with the
session), a per-test store, Hydra compose, CLI runner; and the environment every test and subprocess runs in."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ[var] = "1"

# One intra-op thread for torch, here and in every subprocess the tests start (they inherit os.environ;
# set before torch is imported). The tiny models gain nothing from a second thread, and OpenMP workers
# that spin-wait for a core other work holds make a busy 2-core machine 3-5x slower (measured); they
# also make forking from the pytest process unsafe. OMP_NUM_THREADS set by the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

# Scripts the tests call run with the interpreter that runs the tests: scripts/*.sh honour $PYTHON, and
# a bare `python`/`python3` in a subprocess resolves to this interpreter's folder first.
os.environ["PYTHON"] = sys.executable
_bin = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _bin:
    os.environ["PATH"] = os.pathsep.join([_bin, os.environ.get("PATH", "")]).rstrip(os.pathsep)

#: Subprocess limit of one ``cli()`` call, in seconds: a few tiny cells take 2-40 s on an idle 2-core machine,
#: 3x that on a busy one; this leaves a wide margin (a test's own pytest-timeout marker may be shorter).
CLI_TIMEOUT_S = 600


def pytest_collection_modifyitems(config, items):
    import torch

    _order(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def xdist_worker() -> str | None:
    """The pytest-xdist worker this process is (gw0, gw1, ...), or None when pytest runs alone."""
    return os.environ.get("PYTEST_XDIST_WORKER")


#: Test files that run first (in this order): the ones whose own work is longest, so that under pytest-xdist
#: they start at once on their own workers instead of ending the run alone.
FIRST = ("tests/harness/models/test_family_cells.py", "tests/harness/test_cli.py", "tests/harness/test_resume.py",
         "tests/harness/test_hostile.py", "tests/harness/lora/test_lora_cells.py", "tests/harness/test_launchers.py")
#: Test files that run last: they read the every-engine sweep, which runs beside everything else.
LAST = ("tests/harness/test_every_engine.py",)


def _order(items):
    rank = {name: i for i, name in enumerate(FIRST)}
    rank.update({name: len(FIRST) + 1 for name in LAST})
    key = lambda item: rank.get(item.path.relative_to(ROOT).as_posix(), len(FIRST))
    items.sort(key=key)  # stable: every other test keeps its collection order


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Synthetic checkpoints and BF16 references, built once per test session: one folder that every
    pytest-xdist worker shares (checkpoint builds and references are safe to run at once)."""
    if xdist_worker():
        path = tmp_path_factory.getbasetemp().parent / "harness-cache"
        path.mkdir(exist_ok=True)
        return path
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture(scope="session", autouse=True)
def every_engine_sweep(request, tmp_path_factory, cache_dir):
    """The every-engine sweep (tests/harness/sweep_every_engine.py: about 100 tiny cells in a subprocess),
    started as the session starts when test_every_engine.py is selected (None when not), so that it runs
    beside the other tests; test_every_engine.py, which runs last, collects its records. Under pytest-xdist
    the workers share one sweep: the first to start claims it, and ends the session only once it has ended."""
    if not any(item.path.name == "test_every_engine.py" for item in request.session.items):
        yield None
        return
    from tests.harness.sweep_every_engine import Sweep

    if xdist_worker():
        work = tmp_path_factory.getbasetemp().parent / "every-engine"
        work.mkdir(exist_ok=True)
    else:
        work = tmp_path_factory.mktemp("every-engine")
    sweep = Sweep(cache_dir, work)
    sweep.claim()
    yield sweep
    if sweep.proc is not None and not (request.session.shouldfail or request.session.shouldstop):
        sweep.wait()  # another worker may still read its records
    sweep.stop()


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "results.sqlite"


@pytest.fixture
def compose():
    """compose(overrides) -> the composed DictConfig, exactly as the CLI would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.schema import register

    register()

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def cli(tmp_path, cache_dir, store_path):
    """cli(*args) runs ``python -m harness`` in a subprocess; returns CompletedProcess."""

    def _run(*args, timeout=CLI_TIMEOUT_S, cwd=None):
        env = {**os.environ, "HARNESS_STORE": str(store_path), "HARNESS_CACHE": str(cache_dir),
               "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return _run
