"""GGUF (llama.cpp's block-quantized file format), loaded by diffusers: storage only, each Linear
weight is dequantized to the compute dtype at its forward (diffusers' ``GGUFLinear``; CUDA kernels
when the ``kernels`` package provides them).

Two ways in (pre mode, transformer / unet):
  1. in-house conversion: the BF16 component folder is converted to q8_0 / q5_1 / q5_0 / q4_1 /
     q4_0 with the ``gguf`` package's quantizers (`engines.gguf_convert`), cached by content hash,
     and loaded with ``from_single_file`` + ``GGUFQuantizationConfig`` and the local config;
  2. ``options.file``: any user .gguf for the component (k-quants included, original or diffusers
     tensor layout); the dtype must name the file's dominant type, so results stay truthful.
Post mode quantizes an in-memory module with the same quantizers and swaps its Linear layers for
diffusers' ``GGUFLinear`` (no file).

Option ``file``: path of a user .gguf file (pre mode); None = convert in-house. Converted files live
under the engine's ``cache_dir`` (the harness passes ``run.cache_dir``) in ``gguf/``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from engines.base import Engine, Unsupported
from engines.options import option
from engines.gguf_convert import CONVERTIBLE

K_QUANTS = ("q6_k", "q5_k", "q4_k", "q3_k", "q2_k")


@dataclass(frozen=True)
class GGUFOptions:
    file: Optional[str] = option(None, "a user .gguf for the denoiser (k-quants included, pre mode); "
                                       "null = convert in-house")

_UNQUANTIZED = ("F32", "F16", "BF16")


class GGUFEngine(Engine):
    name = "gguf"
    dtypes = CONVERTIBLE + K_QUANTS
    default_dtype = "q8_0"
    components = ("transformer", "unet")
    modes = ("pre", "post")
    requires = ("gguf",)
    options = GGUFOptions

    def __init__(self, dtype=None, mode="post", options=None, compute_dtype=torch.bfloat16, cache_dir=None):
        super().__init__(dtype, mode, options, compute_dtype, cache_dir)
        self.files: dict[str, str] = {}  # component -> the .gguf file it was loaded from

    def check_platform(self, device):
        super().check_platform(device)
        if self.settings["file"] is None and self.dtype not in CONVERTIBLE:
            raise Unsupported(f"gguf {self.dtype}: the gguf package has no quantizer for k-quants; "
                              f"load a file that holds them with options.file=<path.gguf>")
        if self.settings["file"] is not None and self.mode == "post":
            raise Unsupported("gguf options.file loads a file: it needs pre mode")

    def cache_dir(self) -> Path:
        """Where converted files live: ``<cache_dir>/gguf``, by default under the user's cache folder."""
        if self.cache_root:
            return Path(self.cache_root) / "gguf"
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "quant-diffusion-harness" / "gguf"

    # -- pre mode ---------------------------------------------------------------------------
    def gguf_path(self, name: str, cls: type, path: str) -> Path:
        """The .gguf file to load for component ``name``: the user's (validated) or a conversion."""
        from engines import gguf_convert
        component = Path(path) / name
        user_file = self.settings["file"]
        if user_file is None:
            return gguf_convert.cached_convert(cls, component, self.dtype, self.cache_dir())
        info = gguf_convert.validate(user_file, cls, component)
        if info["dominant"] != self.dtype:
            raise ValueError(f"{user_file}: its quantized weights are mostly {info['dominant']}, "
                             f"not {self.dtype}: set dtype={info['dominant']}")
        return Path(user_file)

    def quantization_config(self, name, cls):
        from diffusers import GGUFQuantizationConfig
        return GGUFQuantizationConfig(compute_dtype=self.compute_dtype)

    def load_component(self, name, cls, path, **kwargs):
        file = self.gguf_path(name, cls, path)
        self.files[name] = str(file)
        kwargs.setdefault("torch_dtype", self.compute_dtype)
        kwargs.pop("use_safetensors", None)  # the weights come from the .gguf file; only its config is read
        try:
            return cls.from_single_file(str(file), config=str(path), subfolder=name, local_files_only=True,
                                        quantization_config=self.quantization_config(name, cls), **kwargs)
        except torch.OutOfMemoryError:
            raise
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"{file}: diffusers could not load it as {cls.__name__}: {err}") from err

    def report(self):
        out = super().report()
        out["settings"]["files"] = dict(self.files)
        return out

    # -- post mode --------------------------------------------------------------------------
    def quantize(self, name, module):
        import gguf
        from accelerate import init_empty_weights
        from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter
        from engines.gguf_convert import qtype

        qt = qtype(self.dtype)
        block, _ = gguf.GGML_QUANT_SIZES[qt]
        for parent in list(module.modules()):
            for child, linear in list(parent.named_children()):
                if type(linear) is not torch.nn.Linear or linear.in_features % block:
                    continue
                weight = linear.weight.detach()
                packed = gguf.quants.quantize(weight.float().cpu().numpy(), qt)
                with init_empty_weights():
                    new = GGUFLinear(linear.in_features, linear.out_features, linear.bias is not None,
                                     compute_dtype=self.compute_dtype)
                new.weight = GGUFParameter(torch.from_numpy(packed).to(weight.device), quant_type=qt)
                if linear.bias is not None:
                    new.bias = torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
                new.requires_grad_(False)
                setattr(parent, child, new)
        return module

    def count_quantized(self, module):
        from diffusers.quantizers.gguf.utils import GGUFLinear
        linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
        done = [m for m in linears if isinstance(m, GGUFLinear)
                and getattr(m.weight, "quant_type", None) is not None and m.weight.quant_type.name not in _UNQUANTIZED]
        return len(done), len(linears)

    def fuse_refusal(self):
        return ("GGUFLinear's weight is the packed GGUF block tensor: peft's merge (fuse_lora) cannot add a "
                "delta to it (it fails on a shape mismatch); the LoRA runs beside the layer instead")

    @classmethod
    def offload_unit(cls, path, module):
        """diffusers' GGUF layers (``GGUFLinear``) dequantize their packed weight at each forward: a layer
        of diffusers' GGUF quantizer that holds parameters moves whole."""
        if (type(module).__module__.startswith("diffusers.quantizers.gguf.")
                and next(module.parameters(), None) is not None):
            return path
        return super().offload_unit(path, module)
