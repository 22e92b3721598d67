"""``compile=cudagraph``: the denoiser's whole forward replayed as a CUDA graph.

A denoising step of a quantized model is hundreds of small kernels, each launched by Python (SDXL's UNet
has ~800 layers a call); on a fast GPU the host, not the GPU, sets the pace. Captured once, the step
replays with one launch. `GraphedForward` replaces the denoiser's ``forward``: the first call with a
given signature (the structure of its arguments, each tensor's shape / dtype / device, every other
value) runs eagerly on a side stream (``warmup`` times: lazy initialisation, kernel autotuning), is
captured into a graph, then replayed; every later call with that signature copies its tensors into the
graph's static inputs, replays, and returns copies of the static outputs (so an output the scheduler
still holds is never overwritten by the next replay). Graphs of one denoiser share a memory pool.

Needs a CUDA device and weights that stay where they are: offload modes move weights between and during
calls (the graph would replay stale addresses), so they are `Unsupported` with this mode. A forward that
synchronises with the host (``.item()``, data-dependent Python branches) cannot be captured: the cell
fails at its first call with CUDA's capture error.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from engines.base import Unsupported


def check(device: torch.device, offload: str, mode: str = "cudagraph") -> None:
    """`Unsupported` unless CUDA graphs can run here: a CUDA device, and no offload mode (``mode``: the compile
    mode the message names)."""
    if device.type != "cuda":
        raise Unsupported(f"compile={mode} needs a CUDA device; this run's device is {device.type}")
    if offload != "none":
        raise Unsupported(f"compile={mode} replays fixed device addresses, and offload={offload} moves the "
                          "weights between calls: use offload=none")


def signature(leaves: list) -> tuple:
    """A hashable key for one call's flattened arguments."""
    key = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key.append(("tensor", tuple(leaf.shape), leaf.dtype, str(leaf.device), leaf.requires_grad))
        else:
            try:
                hash(leaf)
                key.append(("value", type(leaf).__name__, leaf))
            except TypeError:
                key.append(("object", type(leaf).__name__, repr(leaf)))
    return tuple(key)


class GraphedForward:
    """Stands in for ``module.forward`` (see the module docstring). ``captures``: graphs captured so far;
    ``replays``: calls answered by a replay (the capturing call included)."""

    def __init__(self, forward: Callable[..., Any], warmup: int = 2):
        self.forward = forward
        self.warmup = warmup
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None
        self.captures = 0
        self.replays = 0

    def __call__(self, *args, **kwargs):
        leaves, spec = tree_flatten((args, kwargs))
        key = (repr(spec), signature(leaves))
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(leaves, spec)
            self.captures += 1
        replay, static_in, static_out, out_spec = entry
        for static, leaf in zip(static_in, leaves):
            if isinstance(leaf, torch.Tensor):
                static.copy_(leaf)
        replay()
        self.replays += 1
        return tree_unflatten([o.clone() if isinstance(o, torch.Tensor) else o for o in static_out], out_spec)

    def _capture(self, leaves: list, spec) -> tuple:
        static_in = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        args, kwargs = tree_unflatten(static_in, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.forward(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.forward(*args, **kwargs)
        static_out, out_spec = tree_flatten(out)
        return graph.replay, static_in, static_out, out_spec


def install(module: torch.nn.Module, warmup: int = 2) -> GraphedForward:
    """Replace ``module.forward`` with a `GraphedForward` of it; return that."""
    graphed = GraphedForward(module.forward, warmup=warmup)
    module.forward = graphed
    return graphed
