"""LoRA on SDNQ-quantized models.

Mechanism: `SDNQLinear` / `SDNQConv2d` are subclasses of nn.Linear / nn.Conv2d, so diffusers'
LoRA loading (``pipe.load_lora_weights`` / ``model.load_lora_adapter``, through peft) wraps them
exactly as it wraps plain layers: the adapter runs beside the layer in the compute dtype,
``output = sdnq_layer(x) + scale * B(A(x))``. The packed base weight is never dequantized into
storage or re-quantized; unloading (``unload_lora_weights`` / ``unload_lora``) puts the very same
SDNQ layer object back, bit-identical. diffusers' ``fuse_lora`` (peft's merge) would write into the
layer's ``weight``, a dequantized view, and silently drop the LoRA; `fuse` is the harness's own fusing
instead: dequantize, add the LoRA's delta, quantize again (the record says "fused-requantized"), and
`unfuse` restores the original layers bit for bit. peft must be installed.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from engines.sdnq.layers import SDNQLayerMixin


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def lora_wrapped_layers(model: nn.Module) -> list[str]:
    """Names of peft LoRA wrappers whose base layer is an SDNQ layer."""
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "base_layer", None), SDNQLayerMixin)]


@torch.no_grad()
def fuse(model: nn.Module, adapter_names: list[str]) -> int:
    """Fuse the active LoRA adapters ``adapter_names`` into the SDNQ layers they wrap: each weight is
    dequantized (FP32), the adapters' deltas (peft's ``get_delta_weight``, adapter weights included) are
    added, and the sum is quantized again with the layer's own settings; the peft wrapper is replaced by
    the new SDNQ layer. The original layers are kept (``model._sdnq_unfused``) so `unfuse` restores them
    bit for bit. Returns the number of fused layers."""
    from engines.sdnq.apply import quantize_layer

    originals = getattr(model, "_sdnq_unfused", {})
    count = 0
    for name, wrapper in list(model.named_modules()):
        base = getattr(wrapper, "base_layer", None)
        if not isinstance(base, SDNQLayerMixin) or not hasattr(wrapper, "get_delta_weight"):
            continue
        config = _layer_config(model, base)
        weight = base.dequantize_weight(torch.float32)
        for adapter in adapter_names:
            if adapter in wrapper.lora_A:
                weight = weight + wrapper.get_delta_weight(adapter).float().reshape(weight.shape)
        template = _plain_twin(base, weight.to(base.compute_dtype))
        fused = quantize_layer(template, config, weight.device)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, fused)
        originals[name] = base
        count += 1
    model._sdnq_unfused = originals
    return count


def unfuse(model: nn.Module) -> int:
    """Put back the SDNQ layers `fuse` replaced (the same objects, bit-identical); returns how many."""
    originals = getattr(model, "_sdnq_unfused", {})
    for name, layer in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
    model._sdnq_unfused = {}
    return len(originals)


def _layer_config(model: nn.Module, layer: SDNQLayerMixin):
    """The SDNQConfig the layer was quantized with (the engine leaves it on the component)."""
    import dataclasses

    config = getattr(model, "_sdnq_config", None)
    if config is None:
        raise ValueError("this model was not quantized by the SDNQ engine (no _sdnq_config): cannot re-quantize")
    return dataclasses.replace(config, quant_conv=True) if isinstance(layer, nn.Conv2d) else config


def _plain_twin(layer: SDNQLayerMixin, weight: torch.Tensor) -> nn.Module:
    """A plain nn.Linear / nn.Conv2d of ``layer``'s geometry holding ``weight`` and ``layer``'s bias."""
    bias = None if layer.bias is None else layer.bias.detach().clone()
    if isinstance(layer, nn.Conv2d):
        twin = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, bias is not None, layer.padding_mode, device="meta")
    else:
        twin = nn.Linear(layer.in_features, layer.out_features, bias is not None, device="meta")
    twin.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        twin.bias = nn.Parameter(bias.to(weight.device), requires_grad=False)
    return twin


# -- the SDNQ engine's LoRA handling (`engines.base.LORA_MODULES`) ----------------------------------------
def check_lora(engine, fuse: bool, device) -> None:
    """A LoRA runs beside the SDNQ layers (peft wraps them); fusing is `fuse` (re-quantization), never
    diffusers' fuse_lora, so every weight type and device can fuse."""


def fuse_lora(engine, model: nn.Module, names: list[str]) -> str:
    from engines.base import Unsupported

    if fuse(model, names) == 0:
        raise Unsupported("no LoRA layer wraps an SDNQ layer: nothing to fuse")
    model.unload_lora()
    return "fused-requantized"


def unload_lora(engine, model: nn.Module) -> None:
    unfuse(model)
    model.unload_lora()
