"""The SDNQ engine adapter: SD.Next Quantization semantics on the in-house kernels.

Options: `engines.sdnq.config.SDNQOptions` (the quantization settings, plus the dequantization and
INT8 matmul kernel backends, which this process then uses). Post mode swaps Linear (and, with quant_conv, Conv2d) layers in place; pre mode
builds the component on the meta device and quantizes each weight as it is read.
"""
from __future__ import annotations

import torch

from engines.base import Engine, Unsupported
from engines.sdnq.apply import count_layers, layer_stats, quantize_model, quantize_work_nbytes, quantized_nbytes
from engines.sdnq.config import QUANTIZATION_OPTIONS, SDNQConfig, SDNQOptions
from engines.sdnq.dtypes import ALL_TYPES, MATMUL_FLOAT8, supports_quantized_matmul, weight_type
from engines.sdnq import attention
from engines.sdnq.fuse import fuse_projections
from engines.sdnq.layers import SDNQLayerMixin


#: Component names of denoisers, whose attention `quantized_attention` replaces.
DENOISERS = ("transformer", "unet")


class SDNQEngine(Engine):
    name = "sdnq"
    dtypes = ALL_TYPES
    default_dtype = "int8"
    modes = ("pre", "post")
    requires = ()
    round_trips = True
    options = SDNQOptions

    def __init__(self, dtype=None, mode="post", options=None, compute_dtype=torch.bfloat16, cache_dir=None):
        super().__init__(dtype, mode, options, compute_dtype, cache_dir)
        self.config = SDNQConfig(weight_type=self.dtype, compute_dtype=compute_dtype,
                                 **{k: self.settings[k] for k in QUANTIZATION_OPTIONS})
        from engines.sdnq import matmul, triton_dequant

        matmul.INT8_BACKEND = self.settings["int8_backend"]
        matmul.FP8_FAST_ACCUM = self.settings["fp8_fast_accum"]
        triton_dequant.BACKEND = self.settings["dequant_backend"]
        self._done: dict[str, dict] = {}

    def check_platform(self, device: torch.device) -> None:
        super().check_platform(device)
        device = torch.device(device)
        wt = weight_type(self.dtype)
        cfg = self.config
        if wt.kind == "float" and wt.torch_float8 is None:
            raise Unsupported(f"torch {torch.__version__} has no {self.dtype}")
        if cfg.quantize_device == "cuda" and not torch.cuda.is_available():
            raise Unsupported("quantize_device=cuda but no CUDA device is available")
        if cfg.use_quantized_matmul and not supports_quantized_matmul(self.dtype):
            raise Unsupported(f"use_quantized_matmul needs a symmetric int type or one of "
                              f"{', '.join(MATMUL_FLOAT8)}; {self.dtype} has no quantized matmul")
        if cfg.use_quantized_matmul and wt.kind == "float" and device.type == "cuda":
            cap = torch.cuda.get_device_capability(device)
            if cap < (8, 9):
                raise Unsupported(f"FP8 matmul needs a GPU with FP8 tensor cores (sm_89+), this one is "
                                  f"sm_{cap[0]}{cap[1]}; use int8 with use_quantized_matmul instead")
        qattn = self.settings["quantized_attention"]
        if qattn != "none" and device.type == "cuda":
            from engines.sdnq.attention import MODES, kernel_available
            if not kernel_available(device.index, MODES[qattn]):
                need = "FP8 tensor cores (sm_89+)" if MODES[qattn] else "INT8 tensor cores (sm_80+)"
                raise Unsupported(f"quantized_attention={qattn} needs Triton and a GPU with {need}")
        if cfg.use_quantized_matmul and wt.kind == "int" and device.type == "cuda":
            if torch.cuda.get_device_capability(device) < (7, 5):
                raise Unsupported("INT8 matmul needs a GPU with INT8 tensor cores (sm_75+)")

    def quantize(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        module = quantize_model(module, self.config)
        return self._finish(name, module, "post")

    def _finish(self, name: str, module: torch.nn.Module, how: str) -> torch.nn.Module:
        """A component once quantized: projections fused (option ``fuse_qkv``), its report kept."""
        module._sdnq_config = self.config
        extra = {}
        if self.settings["fuse_qkv"] and (fused := fuse_projections(module)):
            extra["fused_projections"] = fused
        if self.settings["quantized_attention"] != "none":
            try:
                count = attention.install(module, self.settings["quantized_attention"])
            except ValueError as err:
                raise Unsupported(f"quantized_attention: {err}") from None
            if not count and name in DENOISERS:
                raise Unsupported(f"quantized_attention={self.settings['quantized_attention']} has a kernel for "
                                  f"{', '.join(attention.PROCESSORS)} (FLUX); this {name} has none")
            if count:
                extra["quantized_attention"] = count
        self._done[name] = {"how": how, **layer_stats(module), **extra}
        return module

    def quantize_onto(self, name: str, module: torch.nn.Module, device: torch.device, budget: int):
        if quantized_nbytes(module, self.config) + quantize_work_nbytes(module, self.config) > budget:
            return None  # it would land on the device only in part, to go back to the CPU whole
        module = quantize_model(module, self.config, place=device, budget=budget)
        return self._finish(name, module, "post")

    def load_component(self, name: str, cls: type, path: str, **kwargs) -> torch.nn.Module:
        from engines.sdnq.loading import load_quantized_component
        from engines.sdnq.serialize import is_quantized_checkpoint, load_quantized

        folder = f"{path}/{name}"
        if is_quantized_checkpoint(folder):  # a checkpoint saved by engines.sdnq.serialize
            module = load_quantized(folder)
            how = "sdnq-checkpoint"
        else:
            dtype = kwargs.get("torch_dtype") or self.compute_dtype
            module, how = load_quantized_component(cls, path, name, self.config, dtype,
                                                   variant=kwargs.get("variant"))
        return self._finish(name, module, how)

    def check_lora(self, fuse: bool, device: torch.device) -> None:
        if self.settings["fuse_qkv"]:
            raise Unsupported("fuse_qkv replaces the to_q / to_k / to_v layers that LoRA files name: "
                              "use engine.options.fuse_qkv=false with a LoRA")
        super().check_lora(fuse, device)

    def count_quantized(self, module: torch.nn.Module) -> tuple[int, int]:
        return count_layers(module, self.config)

    def report(self) -> dict:
        out = super().report()
        from engines.sdnq import matmul, triton_dequant
        out["settings"] = {**out["settings"], "compute_dtype": str(self.compute_dtype).removeprefix("torch.")}
        out["sdnq"] = {"components": self._done, "int8_backend": matmul.INT8_BACKEND,
                       "dequant_backend": triton_dequant.BACKEND, "fp8_fast_accum": matmul.FP8_FAST_ACCUM,
                       "versions": {"torch": torch.__version__}}
        return out

    @classmethod
    def offload_unit(cls, path, module):
        """An SDNQ layer (`SDNQLinear`, `SDNQConv2d`) holds its packed codes, scales and zero points as
        plain tensors: it moves whole."""
        if isinstance(module, SDNQLayerMixin):
            return path
        return super().offload_unit(path, module)
