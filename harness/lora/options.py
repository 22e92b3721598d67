"""The options of every ``lora`` choice: one frozen dataclass per choice, the single source of each option's
name, type, default, meaning and valid range (`engines.options`). Hydra composes them as the ``lora`` group's
nodes, `python -m harness list` and README print them, and `check_options` enforces them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from engines.options import check, option
from engines.registry import unknown_name_message

#: Largest rank a synthetic LoRA may have.
MAX_RANK = 1024


@dataclass(frozen=True)
class NoneOptions:
    """lora=none: no LoRA; no options."""


@dataclass(frozen=True)
class FileOptions:
    """lora=file: LoRA files the user gives, applied together to the denoiser."""

    paths: List[str] = option([], "LoRA .safetensors files (diffusers/peft or kohya keys), applied together")
    scales: Optional[List[float]] = option(None, "one adapter weight per file; null = 1.0 each")
    fuse: bool = option(False, "fuse into the base weights (diffusers fuse_lora) where the engine can; "
                               "false = keep each LoRA beside its layer")


@dataclass(frozen=True)
class SyntheticOptions:
    """lora=synthetic: a random LoRA over the denoiser's attention and feed-forward layers, drawn from a seed
    on the CPU (the same weights on every machine)."""

    rank: int = option(16, "rank of every LoRA layer", min=1, max=MAX_RANK)
    strength: float = option(0.1, "each layer's LoRA update relative to that layer's own output (random weights)",
                             min=0.0, max=10.0)
    scale: float = option(1.0, "adapter weight at inference (diffusers set_adapters)", min=0.0, max=100.0)
    seed: int = option(0, "seed of the LoRA's weights", min=0)
    convs: bool = option(False, "also adapt the 3x3 convolutions of the UNet's resnets (SDXL)")
    fuse: bool = option(False, "fuse into the base weights (diffusers fuse_lora) where the engine can; "
                               "false = keep the LoRA beside each layer")


#: LoRA choice -> its options schema (the YAML files of conf/lora/).
SCHEMAS: dict[str, type] = {"none": NoneOptions, "file": FileOptions, "synthetic": SyntheticOptions}


def check_options(name: str, options: Optional[dict]) -> dict[str, Any]:
    """``options`` of LoRA choice ``name`` resolved against its schema (defaults filled in), or `ValueError`
    (one line) naming the bad key or value and what is valid."""
    if name not in SCHEMAS:
        raise ValueError(unknown_name_message("lora", str(name), list(SCHEMAS)))
    resolved = check(SCHEMAS[name], options, f"lora '{name}'")
    for key in ("strength", "scale"):
        if key in resolved and isinstance(resolved[key], int):
            resolved[key] = float(resolved[key])
    if resolved.get("scales") is not None:
        resolved["scales"] = [float(s) for s in resolved["scales"]]
    return resolved
