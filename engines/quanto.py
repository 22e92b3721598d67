"""optimum-quanto: weight-only int8 / int4 / int2 / float8 (e4m3fn) with per-channel or grouped
scales; activations stay in the compute dtype.

Recipe:
  pre mode  - diffusers' ``QuantoConfig(weights_dtype=...)`` for diffusers components,
              transformers' ``QuantoConfig(weights=...)`` for transformers text encoders.
  post mode - ``optimum.quanto.quantize(module, weights=qtype)`` then ``freeze(module)`` (any
              component); quantization happens where the module lives.

quanto picks the layout itself: int4/int2 weights are grouped by 128 (or the largest multiple of
32 that divides the input size, else per channel) and packed two/four to a byte.
"""
from __future__ import annotations

import torch

from engines.base import Engine

# harness dtype -> optimum.quanto qtype name (also diffusers' / transformers' weights_dtype string)
_QTYPES = {"int8": "qint8", "int4": "qint4", "int2": "qint2", "float8": "qfloat8"}


class QuantoEngine(Engine):
    name = "quanto"
    dtypes = ("int8", "int4", "int2", "float8")
    default_dtype = "int8"
    modes = ("pre", "post")
    requires = ("optimum.quanto",)


    def quantization_config(self, name, cls):
        if cls.__module__.split(".")[0] == "transformers":
            from transformers import QuantoConfig
            return QuantoConfig(weights=self.dtype)
        from diffusers import QuantoConfig
        return QuantoConfig(weights_dtype=self.dtype)

    def quantize(self, name, module):
        from optimum import quanto
        quanto.quantize(module, weights=getattr(quanto, _QTYPES[self.dtype]))
        quanto.freeze(module)
        return module

    def count_quantized(self, module):
        from optimum.quanto import QTensor
        from optimum.quanto.nn import QModuleMixin
        done = sum(isinstance(m, QModuleMixin) and isinstance(m.weight, QTensor) for m in module.modules())
        plain = sum(type(m) in (torch.nn.Linear, torch.nn.Conv2d) for m in module.modules())
        return done, done + plain

    def fuse_refusal(self):
        return ("peft's merge adds the LoRA's delta to quanto's QTensor weight through .data, which leaves the "
                "quantized weight as it was: fuse_lora would drop the LoRA silently (measured: the fused "
                "model's output equals the model without the LoRA)")

    @classmethod
    def offload_unit(cls, path, module):
        """quanto's layers (QLinear, QConv2d, ...) hold QTensor weights with their scales: a layer of the
        optimum.quanto package that holds parameters moves whole."""
        if type(module).__module__.startswith("optimum.quanto.") and next(module.parameters(), None) is not None:
            return path
        return super().offload_unit(path, module)
