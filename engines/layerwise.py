"""FP8 layerwise casting (diffusers ``enable_layerwise_casting``): weights are stored in float8 and
each layer is upcast to the compute dtype for its own forward, then cast back. Storage only: the
matmuls run in the compute dtype.

Recipe (post mode, any component): ``model.enable_layerwise_casting(storage, compute)`` for
diffusers models, which skips diffusers' default patterns (``pos_embed``, ``patch_embed``,
``norm``, ``^proj_in$``, ``^proj_out$``) plus the model's own ``_skip_layerwise_casting_patterns``
and ``_keep_in_fp32_modules``; ``diffusers.hooks.apply_layerwise_casting`` with the same default
patterns for other modules (transformers text encoders).

Option skip_patterns: None = those defaults; a list of regex patterns replaces them.
"""
from __future__ import annotations

import torch

from dataclasses import dataclass
from typing import List, Optional

from engines.base import Engine, Unsupported
from engines.options import option


@dataclass(frozen=True)
class LayerwiseOptions:
    skip_patterns: Optional[List[str]] = option(None, "regex list of modules kept in the compute dtype; "
                                                      "null = diffusers' defaults")


class LayerwiseEngine(Engine):
    name = "layerwise"
    dtypes = ("float8_e4m3fn", "float8_e5m2")
    default_dtype = "float8_e4m3fn"
    modes = ("post",)
    requires = ("diffusers",)
    options = LayerwiseOptions

    @property
    def storage_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def quantize(self, name, module):
        from diffusers.hooks import apply_layerwise_casting

        patterns = self.settings["skip_patterns"]
        patterns = tuple(patterns) if patterns is not None else None
        if hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=self.storage_dtype, compute_dtype=self.compute_dtype,
                                            skip_modules_pattern=patterns)
        else:
            apply_layerwise_casting(module, self.storage_dtype, self.compute_dtype,
                                    skip_modules_pattern=patterns if patterns is not None else "auto")
        return module

    def check_lora(self, fuse, device):
        raise Unsupported("peft creates a LoRA's weights in its base layer's weight dtype, here the float8 storage "
                          "dtype of layerwise casting, and runs them in it without an upcast: the LoRA is rounded "
                          "to float8 and its forward fails (measured on the CPU: NotImplementedError: "
                          "\"mul_cpu_reduced_float\" not implemented for 'Float8_e4m3fn')")

    def count_quantized(self, module):
        from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
        targets = [m for m in module.modules() if isinstance(m, _GO_LC_SUPPORTED_PYTORCH_LAYERS)]
        done = [m for m in targets if _has_casting_hook(m) and m.weight.dtype == self.storage_dtype]
        return len(done), len(targets)


def _has_casting_hook(module: torch.nn.Module) -> bool:
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(_LAYERWISE_CASTING_HOOK) is not None
