"""BF16 reference images: computed once per (model, workload images, hardware) and reused by every
cell that compares against them. `ensure` is the parent's step that makes sure they exist.

A cell with a LoRA is compared with its LoRA reference instead: the images of BF16 and of BF16 + the same
LoRA (kept beside the layers), computed in one BF16 cell with that LoRA and cached under
`lora_reference_key` (the workload's reference key and the LoRA's identity)."""
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
    config["lora"] = {"name": "none", "options": {}}
    return dataclasses.replace(spec, config=config, engine="bf16", dtype="bf16", mode="post",
                               components=[spec.model["denoiser"]], engine_options={}, offload=config["offload"],
                               compile=config["compile"], run=config["run"], lora=config["lora"])


def lora_spec_for(spec):
    """The BF16 cell with ``spec``'s LoRA, kept beside the layers (not fused): its images are the LoRA
    reference of every cell with that LoRA."""
    base = spec_for(spec)
    lora = json.loads(json.dumps(spec.lora))
    lora["options"]["fuse"] = False
    config = {**base.config, "lora": lora}
    return dataclasses.replace(base, config=config, lora=lora)


def lora_identity(lora: dict) -> dict:
    """What makes two LoRAs give the same images: the choice, its options (not ``fuse``: the reference
    never fuses) and its files' content hashes."""
    options = {k: v for k, v in (lora.get("options") or {}).items() if k not in ("fuse", "paths")}
    return {"name": lora["name"], "options": options,
            "files": [f["sha256"] for f in lora.get("files") or []]}


def lora_reference_key(key: str, lora: dict) -> str:
    """The key of the LoRA reference for reference key ``key`` and LoRA ``lora``."""
    blob = json.dumps({"reference": key, "lora": lora_identity(lora)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure(spec, key: str, run_reference) -> bool:
    """Make sure the reference images ``key`` of ``spec`` exist (for a cell with a LoRA: its LoRA
    reference); ``run_reference(ref_spec)`` computes them (an isolated BF16 cell, stored as such) when they
    do not. Workers sharing the cache wait for the one computing them. Returns True when this call
    computed them."""
    cache = spec.run["cache_dir"]
    if spec.has_lora:
        key, present, ref_spec = lora_reference_key(key, spec.lora), load_lora, lora_spec_for
    else:
        present, ref_spec = load, spec_for
    if spec.is_reference or present(cache, key) is not None:
        return False
    with lock(cache, key):
        if present(cache, key) is not None:
            return False
        run_reference(ref_spec(spec))
    return True


#: The pipeline each family's keys were made with before the pipeline was part of them: a model running it
#: keeps its key; any other pipeline is named in the key.
_KEYED_WITHOUT_PIPELINE = {"flux": "FluxPipeline", "sdxl": "StableDiffusionXLPipeline"}


def _call_identity(model: dict) -> dict:
    """The model fields that change the images beyond checkpoint, guidance and sequence length, each only
    when it differs from its default (so keys of models at their defaults stay what they were)."""
    out = {}
    if model.get("pipeline") and model["pipeline"] != _KEYED_WITHOUT_PIPELINE.get(model.get("family")):
        out["pipeline"] = model["pipeline"]
    if model.get("frames") is not None:
        out["frames"] = model["frames"]
    if model.get("input_image"):
        out["input_image"] = True
    if model.get("call"):
        out["call"] = model["call"]
    return out


def reference_key(cell, hardware: str, versions: dict) -> str:
    """The key of ``cell``'s BF16 reference images: what the reference cell generates (checkpoint or
    synthetic architecture, the model's call settings, prompts, seeds, steps, resolution), on which
    hardware, with which core library versions."""
    model = cell.model
    identity = {**_call_identity(model),"checkpoint": cell.checkpoint_path,
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


def save_lora(cache_dir: str, key: str, base: list[torch.Tensor], with_lora: list[torch.Tensor],
              meta: dict) -> Path:
    """The LoRA reference: BF16 images without (``base.pt``) and with the LoRA (``images.pt``, written
    last: its presence means the reference is complete)."""
    target = folder(cache_dir, key)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, suffix=".tmp")
    os.close(fd)
    torch.save(torch.stack(base), tmp)
    os.replace(tmp, target / "base.pt")
    return save(cache_dir, key, with_lora, meta)


def load_lora(cache_dir: str, key: str) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """(BF16 images, BF16 + LoRA images) of LoRA reference ``key``, or None."""
    with_lora = load(cache_dir, key)
    base = folder(cache_dir, key) / "base.pt"
    if with_lora is None or not base.is_file():
        return None
    return list(torch.load(base, weights_only=True)), with_lora


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
