"""BF16 reference images: computed once per (model, workload images, hardware) and reused by every
cell that compares against them. `ensure` is the parent's step that makes sure they exist."""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from harness.synthetic import ARCHITECTURES


def spec_for(spec):
    """The BF16 cell whose images ``spec`` is compared with: same model and workload, no offload, compile
    or GPU memory cap (the reference must fit whatever the cell under test simulates)."""
    config = json.loads(json.dumps(spec.config))
    config["run"] = {**spec.run, "gpu_memory_fraction": None, "gpu_memory_gib": None}
    config["engine"] = {"name": "bf16", "mode": "post", "components": ["denoiser"], "options": {}}
    config["dtype"] = "bf16"
    config["offload"] = {"name": "none", "options": {}}
    config["compile"] = {"name": "none"}
    denoiser = "transformer" if spec.model["family"] == "flux" else "unet"
    return dataclasses.replace(spec, config=config, engine="bf16", dtype="bf16", mode="post",
                               components=[denoiser], engine_options={}, offload=config["offload"],
                               compile=config["compile"], run=config["run"])


def ensure(spec, key: str, run_reference) -> bool:
    """Make sure the reference images ``key`` of ``spec`` exist; ``run_reference(ref_spec)`` computes them
    (an isolated BF16 cell, stored as such) when they do not. Workers sharing the cache wait for the one
    computing them. Returns True when this call computed them."""
    if spec.is_reference or load(spec.run["cache_dir"], key) is not None:
        return False
    with lock(spec.run["cache_dir"], key):
        if load(spec.run["cache_dir"], key) is not None:
            return False
        run_reference(spec_for(spec))
    return True


def reference_key(cell, hardware: str, versions: dict) -> str:
    model = cell.model
    identity = {"checkpoint": cell.checkpoint_path,
                "synthetic": None if cell.checkpoint_path else
                f"{model['synthetic']}-{ARCHITECTURES[model['synthetic']].fingerprint()}",
                "guidance": model["guidance_scale"], "max_seq": model["max_sequence_length"],
                "prompts": cell.workload["prompts"], "seeds": cell.workload["seeds"],
                "steps": cell.workload["steps"], "height": cell.workload["height"], "width": cell.workload["width"],
                "hardware": hardware, "versions": versions}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def folder(cache_dir: str, key: str) -> Path:
    return Path(cache_dir) / "reference" / key


def load(cache_dir: str, key: str) -> list[torch.Tensor] | None:
    path = folder(cache_dir, key) / "images.pt"
    if not path.is_file():
        return None
    return list(torch.load(path, weights_only=True))


def save(cache_dir: str, key: str, images: list[torch.Tensor], meta: dict) -> Path:
    """Write atomically: a concurrent reader sees either no reference or a complete one."""
    target = folder(cache_dir, key)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, suffix=".tmp")
    os.close(fd)
    torch.save(torch.stack(images), tmp)
    (target / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmp, target / "images.pt")
    return target


@contextmanager
def lock(cache_dir: str, key: str):
    """An exclusive lock (flock) for computing reference ``key``: processes sharing the cache wait."""
    path = Path(cache_dir) / "reference" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
