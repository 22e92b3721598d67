"""Compile modes for the denoiser: none, default, max-autotune, reduce-overhead (torch.compile's modes of
the whole denoiser), regional (its repeated blocks only), cudagraph (its forward captured and replayed as
CUDA graphs, no compiler: `harness.cudagraph`), regional-cudagraph (the repeated blocks compiled, then the
whole forward, compiled blocks included, captured and replayed as CUDA graphs)."""
from __future__ import annotations

import torch

from engines.base import Unsupported
from harness import cudagraph


def denoiser(pipe) -> torch.nn.Module:
    return getattr(pipe, "transformer", None) or pipe.unet


#: The modes that replay the denoiser's forward as CUDA graphs (`harness.cudagraph`).
GRAPHED = ("cudagraph", "regional-cudagraph")


def check(name: str, device: torch.device, offload: str, lora: bool = False) -> None:
    """`Unsupported` for a mode that cannot run with this device / offload mode / LoRA (before loading)."""
    if name == "reduce-overhead" and device.type != "cuda":
        raise Unsupported("compile=reduce-overhead is torch.compile with CUDA graphs; on a "
                          f"{device.type} device it would be plain inductor (compile=default)")
    if name in GRAPHED:
        cudagraph.check(device, offload, name)
        if lora:
            raise Unsupported(f"compile={name} with a LoRA: the LoRA is loaded between the cell's two "
                              "measured phases, and graphs captured before would replay the model without it")


def apply(pipe, name: str, fullgraph: bool = False, dynamic: bool = False) -> dict:
    """Compile the denoiser in place (lazily: the cost lands in the first call, timed apart)."""
    if name == "none":
        return {"mode": "none"}
    model = denoiser(pipe)
    if name in ("default", "max-autotune", "reduce-overhead"):
        model.compile(mode=None if name == "default" else name, fullgraph=fullgraph, dynamic=dynamic)
        return {"mode": name, "target": type(model).__name__, "fullgraph": fullgraph, "dynamic": dynamic}
    if name == "cudagraph":
        pipe._graphed_denoiser = cudagraph.install(model)
        return {"mode": "cudagraph", "target": type(model).__name__, "warmup_runs": pipe._graphed_denoiser.warmup}
    if name in ("regional", "regional-cudagraph"):
        if not hasattr(model, "compile_repeated_blocks") or not getattr(model, "_repeated_blocks", None):
            raise Unsupported(f"compile={name}: {type(model).__name__} declares no repeated blocks")
        model.compile_repeated_blocks(fullgraph=fullgraph, dynamic=dynamic)
        out = {"mode": name, "blocks": list(model._repeated_blocks), "fullgraph": fullgraph, "dynamic": dynamic}
        if name == "regional-cudagraph":
            pipe._graphed_denoiser = cudagraph.install(model)
            out["warmup_runs"] = pipe._graphed_denoiser.warmup
        return out
    raise ValueError(f"unknown compile mode {name!r}")


def stats(pipe) -> dict:
    """What the compile mode did during generation ({} for modes that keep no books): graphs captured and
    calls replayed, for cudagraph."""
    graphed = getattr(pipe, "_graphed_denoiser", None)
    return {} if graphed is None else {"graphs_captured": graphed.captures, "calls_replayed": graphed.replays}
