"""BF16 reference images: computed once per (model, workload images, device) and reused by every
cell that compares against them."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from harness.synthetic import ARCHITECTURES


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
