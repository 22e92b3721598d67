"""One tiny sweep of every engine x flux-tiny / sdxl-tiny with a synthetic LoRA, run once per session in a
subprocess (the CLI end to end: validation, references, isolated cells, records, store)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENGINES = ("bf16", "sdnq", "torchao", "bnb", "quanto", "nncf", "gguf", "layerwise")
MODELS = ("flux-tiny", "sdxl-tiny")
#: 64x64, 2 steps: the LoRA's effect is far above 8-bit rounding there, and a cell takes a fraction of a second.
TINY = ("workload.height=64", "workload.width=64", "workload.steps=2", "metrics.save_images=false")


@pytest.fixture(scope="session")
def lora_sweep(tmp_path_factory, cache_dir):
    """(records by (model, engine), store path, cache dir) of the sweep."""
    from harness.store import ResultStore

    root = tmp_path_factory.mktemp("lora-sweep")
    store = root / "results.sqlite"
    env = {**os.environ, "HARNESS_STORE": str(store), "HARNESS_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "harness", "-m", f"engine={','.join(ENGINES)}",
                           f"model={','.join(MODELS)}", "lora=synthetic", *TINY],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {}
    for r in ResultStore(str(store)).records():
        records[(r["model"], r["engine"])] = r
    return records, store, cache_dir
