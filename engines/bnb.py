"""bitsandbytes: NF4 / FP4 (4-bit, blockwise absmax, optional double quantization) and LLM.int8.

Recipe:
  pre mode  - diffusers' ``BitsAndBytesConfig`` for diffusers components, transformers' own class
              for transformers text encoders; weights are quantized while they are read.
  post mode - every ``nn.Linear`` becomes ``bnb.nn.Linear4bit`` / ``bnb.nn.Linear8bitLt``, the same
              layers the pre-mode loaders create, quantized layer by layer on the run's device and
              put back where the layer was.

bitsandbytes 0.50 quantizes and runs on the CPU too (post mode, and transformers' pre mode).
diffusers' quantizer refuses without a GPU; that refusal, in diffusers' words, is the
`Unsupported` reason of a diffusers component in pre mode.

Options:
  double_quant: quantize the 4-bit absmax scales again (``bnb_4bit_use_double_quant``).
  int8_threshold: LLM.int8 outlier threshold (``llm_int8_threshold``; 6.0 as in the HF loaders).
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from engines.base import Engine, Unsupported
from engines.options import option


@dataclass(frozen=True)
class BnbOptions:
    double_quant: bool = option(False, "nf4/fp4: quantize the absmax scales again (bnb_4bit_use_double_quant)")
    int8_threshold: float = option(6.0, "LLM.int8 outlier threshold (llm_int8_threshold)", min=0.0)


class BitsAndBytesEngine(Engine):
    name = "bnb"
    dtypes = ("nf4", "fp4", "int8")
    default_dtype = "nf4"
    modes = ("pre", "post")
    requires = ("bitsandbytes",)
    options = BnbOptions

    def __init__(self, dtype=None, mode="post", options=None, compute_dtype=torch.bfloat16, cache_dir=None):
        super().__init__(dtype, mode, options, compute_dtype, cache_dir)
        self.device: torch.device | None = None

    def check_platform(self, device):
        super().check_platform(device)
        self.device = torch.device(device)
        if self.dtype == "int8" and self.settings["double_quant"]:
            raise Unsupported("bnb int8 (LLM.int8) has no double quantization; it applies to nf4/fp4")

    # -- pre mode ---------------------------------------------------------------------------
    def quantization_config(self, name, cls):
        if _is_transformers(cls):
            from transformers import BitsAndBytesConfig
        else:
            from diffusers import BitsAndBytesConfig
        if self.dtype == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.settings["int8_threshold"])
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.dtype,
                                  bnb_4bit_compute_dtype=self.compute_dtype,
                                  bnb_4bit_use_double_quant=self.settings["double_quant"])

    def load_component(self, name, cls, path, **kwargs):
        config = self.quantization_config(name, cls)
        if not _is_transformers(cls):
            from diffusers.quantizers.auto import DiffusersAutoQuantizer
            try:
                DiffusersAutoQuantizer.from_config(config).validate_environment()
            except RuntimeError as err:  # diffusers: "No GPU found. A GPU is needed for quantization."
                raise Unsupported(f"bnb pre mode for '{name}' ({cls.__name__}): diffusers says: {err} "
                                  "(post mode quantizes on the CPU)") from err
        return cls.from_pretrained(path, subfolder=name, quantization_config=config, **kwargs)

    # -- post mode --------------------------------------------------------------------------
    def quantize(self, name, module):
        for parent, child, linear in _linears(module):
            # Layers a model keeps in float32 (diffusers' _keep_in_fp32_modules: Wan's time embedder) stay as
            # they are, as in diffusers' own pre mode: bitsandbytes' 4-bit layers return bytes for them on a CPU.
            if linear.weight.dtype == torch.float32 and self.compute_dtype != torch.float32:
                continue
            setattr(parent, child, self._convert(linear))
        return module

    def _convert(self, linear: torch.nn.Linear) -> torch.nn.Module:
        import bitsandbytes as bnb

        home = linear.weight.device
        work = self.device or home
        weight = linear.weight.data
        if self.dtype == "int8":
            new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      has_fp16_weights=False, threshold=self.settings["int8_threshold"],
                                      device="meta")
            # Int8Params quantizes only on a move *from the CPU* to a device; a weight already on the GPU
            # would stay BF16 until the first forward (and be measured as BF16).
            new.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                    compute_dtype=self.compute_dtype, quant_type=self.dtype,
                                    compress_statistics=self.settings["double_quant"], device="meta")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=self.dtype,
                                           compress_statistics=self.settings["double_quant"], module=new)
        if linear.bias is not None:
            new.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        new.to(work)  # bitsandbytes quantizes a weight when it is moved to a device
        if work != home:
            new.to(home)
        new.requires_grad_(False)
        return new

    def count_quantized(self, module):
        import bitsandbytes as bnb
        quantized = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
        done = sum(isinstance(m, quantized) for m in module.modules())
        others = sum(type(m) is torch.nn.Linear for m in module.modules())
        return done, done + others

    def check_lora(self, fuse, device):
        """peft wraps bitsandbytes' layers; its merge dequantizes, adds the delta and quantizes again."""
        super().check_lora(False, device)
        if fuse and torch.device(device).type != "cuda":
            raise Unsupported("peft's bitsandbytes merge (fuse_lora) fails on the CPU with bitsandbytes 0.50 "
                              "(nf4: a shape mismatch in the re-quantization; int8: 'result type Float can't be "
                              "cast to the desired output type Char')")

    def fuse_lora(self, pipe, component, names):
        super().fuse_lora(pipe, component, names)
        return "fused-requantized"

    @classmethod
    def offload_unit(cls, path, module):
        """bitsandbytes layers keep their scales beside the packed weight (quant_state, SCB): a layer of
        the bitsandbytes package that holds parameters moves whole."""
        if type(module).__module__.startswith("bitsandbytes.") and next(module.parameters(), None) is not None:
            return path
        return super().offload_unit(path, module)


def _is_transformers(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "transformers"


def _linears(module: torch.nn.Module):
    """(parent, attribute name, nn.Linear) for every plain Linear under ``module``."""
    found = []
    for parent in module.modules():
        for child, sub in parent.named_children():
            if type(sub) is torch.nn.Linear:
                found.append((parent, child, sub))
    return found
