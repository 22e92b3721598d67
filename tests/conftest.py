"""Shared fixtures: a session cache for synthetic checkpoints, a per-test store, Hydra compose, CLI runner."""
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


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Synthetic checkpoints and BF16 references, built once per test session."""
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "results.sqlite"


@pytest.fixture
def compose():
    """compose(overrides) -> the composed DictConfig, exactly as the CLI would build it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.config import register

    register()

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def cli(tmp_path, cache_dir, store_path):
    """cli(*args) runs ``python -m harness`` in a subprocess; returns CompletedProcess."""

    def _run(*args, timeout=600, cwd=None):
        env = {**os.environ, "HARNESS_STORE": str(store_path), "HARNESS_CACHE": str(cache_dir),
               "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd or tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return _run
