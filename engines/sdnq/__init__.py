"""SDNQ: the in-house quantization library (SD.Next Quantization semantics, our own code).

Modules, one job each: `dtypes` (weight types), `pack` (bit packing), `quantize` (tensor
quantize / dequantize), `layers` (quantized Linear / Conv2d), `apply` (swap layers in a model),
`matmul` (+ `triton_int8`: quantized INT8 / FP8 matmul), `loading` (pre mode), `serialize`
(save / load), `lora` (LoRA on quantized layers), `engine` (the harness adapter).
Importing this package imports no GPU code and initialises no CUDA context.
"""
from engines.sdnq.apply import count_layers, quantize_model
from engines.sdnq.config import SDNQConfig, SDNQOptions
from engines.sdnq.layers import SDNQConv2d, SDNQLinear

__all__ = ["SDNQConfig", "SDNQOptions", "SDNQLinear", "SDNQConv2d", "quantize_model", "count_layers"]
