"""A synthetic LoRA: random low-rank updates of a denoiser's attention and feed-forward Linear layers (and,
optionally, the 3x3 convolutions of a UNet's resnets), drawn from a seed on the CPU in layer-name order, so
every machine draws the same weights for the same architecture.

Scale: ``lora_A`` ~ N(0, 1/fan_in), ``lora_B`` ~ N(0, strength^2 / rank), so the update ``B @ A @ x`` of a
layer is about ``strength`` times the size of a tame layer's own output (`harness.synthetic`'s weights keep
activations at their scale). Keys are diffusers/peft's: ``<prefix>.<layer>.lora_A.weight``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

#: Layers a synthetic LoRA adapts: attention projections (FLUX ``attn``, SDXL ``attn1`` / ``attn2``),
#: feed-forward layers (``ff``, ``ff_context``) and FLUX's single-block MLP in / merged output projections.
_TARGET = re.compile(r"(^|\.)(attn\d?|ff|ff_context)\.|(^|\.)single_transformer_blocks\.\d+\.(proj_mlp|proj_out)$")
_CONV = re.compile(r"(^|\.)resnets\.\d+\.conv[12]$")


def targets(denoiser: nn.Module, convs: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every layer a synthetic LoRA adapts, sorted by name. Quantized layers count as the
    Linear / Conv2d they replace (every engine's layer type subclasses them or is matched by its name)."""
    out = []
    for name, module in denoiser.named_modules():
        if _is_linear(module) and _TARGET.search(name):
            out.append((name, module))
        elif convs and isinstance(module, nn.Conv2d) and _CONV.search(name) and tuple(module.kernel_size) == (3, 3):
            out.append((name, module))
    return sorted(out, key=lambda item: item[0])


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and not _is_peft_part(module)


def _is_peft_part(module: nn.Module) -> bool:
    return hasattr(module, "base_layer")


def state_dict(denoiser: nn.Module, prefix: str, rank: int, strength: float, seed: int, convs: bool = False,
               dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The LoRA's weights for ``denoiser`` (CPU tensors in ``dtype``), keyed for diffusers'
    ``load_lora_weights``. The same arguments give the same tensors on every machine."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, layer in targets(denoiser, convs):
        if isinstance(layer, nn.Conv2d):
            cin, cout, (kh, kw) = layer.in_channels, layer.out_channels, layer.kernel_size
            a = torch.randn(rank, cin, kh, kw, generator=gen) / (cin * kh * kw) ** 0.5
            b = torch.randn(cout, rank, 1, 1, generator=gen) * (strength / rank ** 0.5)
        else:
            a = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features ** 0.5
            b = torch.randn(layer.out_features, rank, generator=gen) * (strength / rank ** 0.5)
        out[f"{prefix}.{name}.lora_A.weight"] = a.to(dtype)
        out[f"{prefix}.{name}.lora_B.weight"] = b.to(dtype)
    return out
