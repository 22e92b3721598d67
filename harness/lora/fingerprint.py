"""A module's exact state, cheaply: per tensor its type, dtype, shape and two checksums of its raw bits, plus
the layer types in order. Two fingerprints are equal when unloading a LoRA restored the module bit for bit
(every stored tensor, tensor subclasses unflattened into their inner tensors, and the same layer types)."""
from __future__ import annotations

import torch
from torch import nn

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def fingerprint(module: nn.Module) -> dict:
    tensors = {}
    for name, t in module.state_dict(keep_vars=True).items():
        if isinstance(t, torch.Tensor):
            tensors[name] = _tensor(t)
    layers = tuple(f"{n}:{type(m).__name__}" for n, m in module.named_modules())
    return {"tensors": tensors, "layers": layers}


@torch.no_grad()
def _tensor(t: torch.Tensor):
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        inner, _ = t.__tensor_flatten__()
        return (type(t).__name__, tuple(_tensor(getattr(t, n)) for n in inner if getattr(t, n) is not None))
    data = t.detach()
    if type(data) not in (torch.Tensor, nn.Parameter):
        data = data.as_subclass(torch.Tensor)
    data = data.contiguous().reshape(-1)
    if data.dtype == torch.bool:
        data = data.to(torch.uint8)
    bits = data.view(_INT_OF_SIZE[data.element_size()]) if data.numel() else data
    s1 = int(bits.sum(dtype=torch.int64)) if bits.numel() else 0
    s2 = float((bits.to(torch.float64) ** 2).sum()) if bits.numel() else 0.0
    return (type(t).__name__, str(t.dtype), tuple(t.shape), s1, s2)


def differences(before: dict, after: dict, limit: int = 3) -> list[str]:
    """Names of what differs (at most ``limit``): a tensor, or the layer types."""
    out = []
    if before["layers"] != after["layers"]:
        out.append("layer types")
    keys = sorted(set(before["tensors"]) | set(after["tensors"]))
    out += [k for k in keys if before["tensors"].get(k) != after["tensors"].get(k)]
    return out[:limit]
