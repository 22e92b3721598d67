"""The reference engine: weights stay in the compute dtype (bf16, or fp16)."""
from __future__ import annotations

import torch

from engines.base import Engine


class BF16Engine(Engine):
    name = "bf16"
    dtypes = ("bf16", "fp16")
    default_dtype = "bf16"
    modes = ("pre", "post")
    is_reference = True

    def __init__(self, dtype=None, mode="post", options=None, compute_dtype=torch.bfloat16, cache_dir=None):
        super().__init__(dtype, mode, options, compute_dtype, cache_dir)
        self.compute_dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16

    def load_component(self, name, cls, path, **kwargs):
        return cls.from_pretrained(path, subfolder=name, **kwargs)

    def quantize(self, name, module):
        return module.to(self.compute_dtype)

    def count_quantized(self, module):
        return 0, 0

    def check_lora(self, fuse, device):
        """A LoRA beside each layer or, with ``fuse``, diffusers' fuse_lora into the BF16 weights."""
        super().check_lora(False, device)
