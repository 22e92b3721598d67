"""Walk a module tree and swap its Linear (and optionally Conv2d) layers for SDNQ layers."""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from engines.base import module_nbytes
from engines.sdnq.config import SDNQConfig
from engines.sdnq.dtypes import conv_weight_type, weight_type
from engines.sdnq.quantize import resolve_group_size
from engines.sdnq.layers import SDNQConv2d, SDNQLayerMixin, SDNQLinear


def is_candidate(module: nn.Module, config: SDNQConfig) -> bool:
    """A layer this config quantizes (quantized or not yet)."""
    if isinstance(module, nn.Linear):
        return True
    return config.quant_conv and isinstance(module, nn.Conv2d)


def _skipped(name: str, config: SDNQConfig) -> bool:
    return any(name == s or name.startswith(s + ".") for s in config.skip)


def quantize_layer(module: nn.Module, config: SDNQConfig, device: torch.device | None = None,
                   home: torch.device | None = None) -> nn.Module:
    """The quantized replacement of one Linear / Conv2d, its math on ``device`` (None: where the weight is),
    itself on ``home`` (None: where the weight is)."""
    if isinstance(module, nn.Linear):
        return SDNQLinear.from_linear(module, config, device, home)
    return SDNQConv2d.from_conv(module, config, device, home=home)


#: Peak bytes of quantizing one layer, in multiples of its unquantized (16-bit) bytes: the weight on the
#: device, its float32 copy and the float32 quotient before rounding, with room to spare (an upper estimate).
QUANTIZE_WORK = 6


def quantize_work_nbytes(model: nn.Module, config: SDNQConfig) -> int:
    """Device bytes that quantizing ``model``'s largest target layer needs beside what is placed."""
    sizes = [module_nbytes(m) for name, m in model.named_modules()
             if is_candidate(m, config) and not isinstance(m, SDNQLayerMixin) and not _skipped(name, config)]
    return QUANTIZE_WORK * max(sizes, default=0)


@torch.no_grad()
def quantize_model(model: nn.Module, config: SDNQConfig, place: torch.device | None = None,
                   budget: int = 0) -> nn.Module:
    """Quantize ``model`` in place, layer by layer (each original weight is released as soon as
    its layer is replaced). Returns the model, or the new layer if ``model`` itself is a layer.
    With ``place``, a layer's quantized form is put on ``place`` while the layers put there so far and
    the working memory of quantizing the layer (`QUANTIZE_WORK`) fit in ``budget``; later ones stay where
    their weights are."""
    device = config.quantize_on()
    if is_candidate(model, config) and not isinstance(model, SDNQLayerMixin):
        return quantize_layer(model, config, device)
    placed = 0
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if (isinstance(child, SDNQLayerMixin) or not is_candidate(child, config)
                    or _skipped(full, config) or _has_tuner(child)):
                continue
            if place is not None and placed + QUANTIZE_WORK * module_nbytes(child) <= budget:
                layer = quantize_layer(child, config, device, home=place)
                placed += module_nbytes(layer)
            else:
                layer = quantize_layer(child, config, device)
            setattr(parent, child_name, layer)
            del child
    return model


def quantized_nbytes(model: nn.Module, config: SDNQConfig) -> int:
    """About the bytes ``model`` will hold once quantized with ``config`` (an upper estimate: the packed
    weights with a row of padding, a 4-byte scale and zero point per group and per row, the weight type
    convolutions really get, and everything else as it is)."""
    total = 0
    for name, m in model.named_modules():
        own = [t for t in [*m._parameters.values(), *m._buffers.values()] if t is not None]
        if is_candidate(m, config) and not isinstance(m, SDNQLayerMixin) and not _skipped(name, config):
            wtype = conv_weight_type(config.weight_type) if isinstance(m, nn.Conv2d) else config.weight_type
            bits = weight_type(wtype).bits
            rows, numel = m.weight.shape[0], m.weight.numel()
            k = numel // rows
            group = resolve_group_size(config.group_size, bits, k, isinstance(m, nn.Conv2d))
            groups = rows * (-(-k // group)) if group > 0 else rows
            total += (numel + k) * bits // 8 + 8 + (groups + rows) * 4
            total += sum(t.numel() * t.element_size() for t in own if t is not m.weight)
        else:
            total += sum(t.numel() * t.element_size() for t in own)
    return total


def _has_tuner(module: nn.Module) -> bool:
    """peft wrappers are not plain layers: quantize before loading LoRAs."""
    return hasattr(module, "base_layer")


def count_layers(model: nn.Module, config: SDNQConfig) -> tuple[int, int]:
    """(SDNQ layers, layers this config targets)."""
    done = total = 0
    for name, m in model.named_modules():
        if isinstance(m, SDNQLayerMixin):
            done += 1
            total += 1
        elif is_candidate(m, config) and not _skipped(name, config) and not _is_lora_part(name):
            total += 1
    return done, total


def _is_lora_part(name: str) -> bool:
    parts = name.split(".")
    return any(p in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for p in parts)


def layer_stats(model: nn.Module) -> dict:
    """Counts by weight type and by compute path, for the engine report."""
    types, paths = Counter(), Counter()
    for m in model.modules():
        if isinstance(m, SDNQLayerMixin):
            types[m.weight_type] += 1
            paths["quantized_matmul" if m.use_quantized_matmul else "dequantize"] += 1
    return {"weight_types": dict(types), "compute_paths": dict(paths)}
