"""LoRA on SDNQ-quantized models.

Mechanism: `SDNQLinear` / `SDNQConv2d` are subclasses of nn.Linear / nn.Conv2d, so diffusers'
LoRA loading (``pipe.load_lora_weights`` / ``model.load_lora_adapter``, through peft) wraps them
exactly as it wraps plain layers: the adapter runs beside the layer in the compute dtype,
``output = sdnq_layer(x) + scale * B(A(x))``. The packed base weight is never dequantized into
storage or re-quantized; unloading (``unload_lora_weights`` / ``unload_lora``) puts the very same
SDNQ layer object back, bit-identical. ``fuse_lora`` is not supported (it would rewrite the base
weight; the layer's ``weight`` is a read-only dequantized view). peft must be installed.
"""
from __future__ import annotations

import importlib.util

from torch import nn

from engines.sdnq.layers import SDNQLayerMixin


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def lora_wrapped_layers(model: nn.Module) -> list[str]:
    """Names of peft LoRA wrappers whose base layer is an SDNQ layer."""
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "base_layer", None), SDNQLayerMixin)]
