"""Compile modes for the denoiser: none, default, max-autotune, regional (repeated blocks only)."""
from __future__ import annotations

import torch

from engines.base import Unsupported


def denoiser(pipe) -> torch.nn.Module:
    return getattr(pipe, "transformer", None) or pipe.unet


def apply(pipe, name: str, fullgraph: bool = False, dynamic: bool = False) -> dict:
    """Compile the denoiser in place (lazily: the cost lands in the first call, timed apart)."""
    if name == "none":
        return {"mode": "none"}
    model = denoiser(pipe)
    if name in ("default", "max-autotune"):
        model.compile(mode=None if name == "default" else "max-autotune", fullgraph=fullgraph, dynamic=dynamic)
        return {"mode": name, "target": type(model).__name__, "fullgraph": fullgraph, "dynamic": dynamic}
    if name == "regional":
        if not hasattr(model, "compile_repeated_blocks") or not getattr(model, "_repeated_blocks", None):
            raise Unsupported(f"compile=regional: {type(model).__name__} declares no repeated blocks")
        model.compile_repeated_blocks(fullgraph=fullgraph, dynamic=dynamic)
        return {"mode": "regional", "blocks": list(model._repeated_blocks)}
    raise ValueError(f"unknown compile mode {name!r}")
