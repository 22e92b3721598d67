"""What identifies a cell for resume: its cell key (config that shapes the run + library versions +
hardware), computed in the parent without touching CUDA."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from harness import env
from harness.spec import CellSpec
from harness.synthetic import ARCHITECTURES

CORE = ("torch", "diffusers", "transformers")


@dataclass(frozen=True)
class Identity:
    key: str
    device_type: str
    hardware: str
    versions: dict

    def parent_env(self) -> dict:
        """The env block a record carries when its cell died before reporting its own."""
        return {"device": self.device_type, "device_name": self.hardware, "versions": self.versions,
                "git_sha": env.git_sha()}


def device_type(spec: CellSpec) -> str:
    import torch

    requested = spec.run["device"]
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested.split(":")[0]


def versions(spec: CellSpec) -> dict:
    from engines.registry import get_engine_class

    out = {p: env.package_version(p) for p in CORE}
    out.update(get_engine_class(spec.engine).package_versions())
    if spec.has_lora:
        out["peft"] = env.package_version("peft")
    return out


def cell_key(spec: CellSpec, hardware: str, vers: dict) -> str:
    """Every setting that changes what runs (engine options, kernel backends included; a LoRA's options and
    its files' content hashes), versions, hardware."""
    model = dict(spec.model)
    if not spec.checkpoint_path:
        model["fingerprint"] = ARCHITECTURES[model["synthetic"]].fingerprint()
    identity = {"model": model, "checkpoint": spec.checkpoint_path, "engine": spec.engine, "dtype": spec.dtype,
                "mode": spec.mode, "components": spec.components, "options": spec.engine_options,
                "offload": spec.offload, "compile": spec.compile, "workload": spec.workload,
                "metrics": spec.metrics, "device": spec.run["device"], "hardware": hardware,
                "gpu_memory_fraction": spec.run.get("gpu_memory_fraction"), "versions": vers}
    if spec.run.get("gpu_memory_gib"):
        identity["gpu_memory_gib"] = spec.run["gpu_memory_gib"]
    if spec.has_lora:  # cells without a LoRA keep the keys they had before LoRA became an axis
        identity["lora"] = spec.lora
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def identify(spec: CellSpec) -> Identity:
    kind = device_type(spec)
    hardware = env.hardware_name(kind)
    vers = versions(spec)
    return Identity(cell_key(spec, hardware, vers), kind, hardware, vers)
