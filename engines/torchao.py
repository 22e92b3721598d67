"""torchao: weight-only and dynamic-activation quantization of Linear layers via AOBaseConfig objects.

dtypes: int8 (weight-only), int8dq (W8A8 dynamic), int4 (weight-only, grouped), float8 (weight-only),
float8dq (W8A8 float8 dynamic, row-wise or tensor-wise scales).
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from engines.base import Engine, Unsupported
from engines.options import option


@dataclass(frozen=True)
class TorchAOOptions:
    group_size: int = option(128, "int4 weight-only group size", choices=(32, 64, 128, 256))
    granularity: str = option("row", "float8dq activation/weight scales: per row or per tensor",
                              choices=("row", "tensor"))


class TorchAOEngine(Engine):
    name = "torchao"
    dtypes = ("int8", "int8dq", "int4", "float8", "float8dq")
    default_dtype = "int8"
    modes = ("pre", "post")
    requires = ("torchao",)
    round_trips = True
    options = TorchAOOptions

    def check_platform(self, device: torch.device) -> None:
        super().check_platform(device)
        if self.dtype == "int4" and device.type != "cuda":
            raise Unsupported("torchao int4 weight-only has no CPU kernel in this torchao: its packing formats "
                              "need CUDA (tile_packed_to_4d) or the mslk package")
        if self.dtype == "float8dq":
            if device.type != "cuda":
                raise Unsupported("torchao float8 dynamic quantization needs a CUDA GPU of compute capability >= 8.9")
            if torch.cuda.get_device_capability(device) < (8, 9):
                raise Unsupported(f"torchao float8 dynamic quantization needs compute capability >= 8.9, "
                                  f"this GPU has {torch.cuda.get_device_capability(device)}")

    def ao_config(self):
        """The AOBaseConfig object for this dtype (config is data; torchao's handler applies it)."""
        from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig,
                                          Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                          Int8WeightOnlyConfig, PerRow, PerTensor)

        if self.dtype == "int8":
            return Int8WeightOnlyConfig(version=2)
        if self.dtype == "int8dq":
            return Int8DynamicActivationInt8WeightConfig(version=2)
        if self.dtype == "int4":
            from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

            return Int4WeightOnlyConfig(group_size=int(self.settings["group_size"]),
                                        int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
        if self.dtype == "float8":
            return Float8WeightOnlyConfig()
        granularity = PerRow() if self.settings["granularity"] == "row" else PerTensor()
        return Float8DynamicActivationFloat8WeightConfig(granularity=granularity)

    def _targets(self, module: torch.nn.Module, fqn: str = "") -> bool:
        if not isinstance(module, torch.nn.Linear):
            return False
        if self.dtype == "int4":  # grouped: the input dim must split into whole groups
            return module.in_features % int(self.settings["group_size"]) == 0
        if self.dtype == "float8dq":  # _scaled_mm needs dims divisible by 16
            return module.in_features % 16 == 0 and module.out_features % 16 == 0
        return True

    def quantization_config(self, name: str, cls: type):
        if cls.__module__.startswith("transformers"):
            from transformers import TorchAoConfig
        else:
            from diffusers import TorchAoConfig
        return TorchAoConfig(quant_type=self.ao_config())

    def quantize(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        from torchao.quantization import quantize_

        quantize_(module, self.ao_config(), filter_fn=self._targets)
        return module

    def count_quantized(self, module: torch.nn.Module) -> tuple[int, int]:
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        done = sum(type(m.weight) not in (torch.Tensor, torch.nn.Parameter) for m in linears)
        return done, len(linears)

    def check_lora(self, fuse, device):
        """peft wraps torchao's layers (TorchaoLoraLinear) and fuses by dequantize + add + quantize_ again."""
        super().check_lora(False, device)
        if self.dtype == "int4":
            raise Unsupported("peft's TorchaoLoraLinear takes int8 (and float8) torchao weights only: it refuses "
                              "Int4Tensor (\"only supports int8 weights for now\")")

    def fuse_lora(self, pipe, component, names):
        """peft's merge re-quantizes with the config diffusers' TorchAoConfig hands it in pre mode; in post
        mode the harness hands it the same config (the one this engine applied)."""
        config = self.ao_config
        for module in getattr(pipe, component).modules():
            if type(module).__name__ == "TorchaoLoraLinear" and module.get_apply_tensor_subclass is None:
                module.get_apply_tensor_subclass = config
        super().fuse_lora(pipe, component, names)
        return "fused-requantized"

    @classmethod
    def offload_unit(cls, path, module):
        """torchao's weights are tensor subclasses (the default rule); a layer of the torchao package that
        holds parameters moves whole too."""
        if type(module).__module__.startswith("torchao.") and next(module.parameters(), None) is not None:
            return path
        return super().offload_unit(path, module)
