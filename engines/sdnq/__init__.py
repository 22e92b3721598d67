"""SDNQ: the in-house quantization library (SD.Next Quantization semantics, our own code).

Modules, one job each: `dtypes` (weight types), `pack` (bit packing), `quantize` (tensor
quantize / dequantize), `layers` (quantized Linear / Conv2d), `apply` (swap layers in a model),
`matmul` (+ `triton_int8`: quantized INT8 / FP8 matmul), `loading` (pre mode), `serialize`
(save / load), `lora` (LoRA on quantized layers), `engine` (the harness adapter).
Importing this package imports no GPU code, initialises no CUDA context, and imports torch only when one
of the names below is first used (the option schemas in `config` are read without it).
"""
from __future__ import annotations

import importlib

__all__ = ["SDNQConfig", "SDNQOptions", "SDNQLinear", "SDNQConv2d", "quantize_model", "count_layers"]
_HOME = {"SDNQConfig": "engines.sdnq.config", "SDNQOptions": "engines.sdnq.config",
         "SDNQLinear": "engines.sdnq.layers", "SDNQConv2d": "engines.sdnq.layers",
         "quantize_model": "engines.sdnq.apply", "count_layers": "engines.sdnq.apply"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'engines.sdnq' has no attribute {name!r}")
