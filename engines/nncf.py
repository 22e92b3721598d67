"""NNCF weight compression (OpenVINO's Neural Network Compression Framework) on torch modules.

Recipe: ``nncf.compress_weights`` traces the module once with example inputs (built here from the
module's own config, so no workload is needed), stores every Linear weight as int8/uint8 or packed
int4 and inserts a decompressor hook that rebuilds the weight at each forward.

dtypes (SD.Next names): ``int8`` (asymmetric, uint8 + zero point), ``int8_sym`` (int8),
``int4`` (asymmetric, packed uint4 + zero point), ``int4_sym`` (packed int4).

Options:
  group_size: 0 = automatic (int4: 64, int8: none), -1 = no grouping (per output channel),
      n > 0 = that group size (int4 only: NNCF's int8 modes are per channel). A layer whose input
      size the group does not divide gets the largest power-of-two group that does
      (NNCF's ``GroupSizeFallbackMode.ADJUST``).
  quant_conv: also compress convolutions (SDXL UNet). NNCF keeps them per channel in int8
      (its backup precision) in every mode: group sizes do not apply to convolutions.
  decompress_fp32: decompress in FP32 instead of NNCF's FP16 (scales are stored in FP32).
  compile_decompress: run every decompressor through one torch.compile(dynamic=True) function;
      None = on when the run's device is CUDA and Triton is installed.
  int8_matmul: direct INT8 matmul for int8_sym; declared, not implemented yet (Unsupported).

Only post mode: NNCF compresses a module that already holds its weights.
"""
from __future__ import annotations

import importlib.util

import torch

from dataclasses import dataclass
from typing import Optional

from engines.base import Engine, Unsupported
from engines.options import option


@dataclass(frozen=True)
class NNCFOptions:
    group_size: int = option(0, "0 = auto (int4: 64, int8: per channel), -1 = per channel, n = int4 group size",
                             min=-1)
    quant_conv: bool = option(False, "also compress convolutions (SDXL UNet), per channel int8")
    decompress_fp32: bool = option(False, "decompress in FP32 instead of FP16")
    compile_decompress: Optional[bool] = option(None, "torch.compile the decompressors; null = on with CUDA + Triton")
    int8_matmul: bool = option(False, "direct INT8 matmul for int8_sym (not implemented: unsupported)")

# SD.Next dtype name -> nncf.CompressWeightsMode member.
_MODES = {"int8": "INT8_ASYM", "int8_sym": "INT8_SYM", "int4": "INT4_ASYM", "int4_sym": "INT4_SYM"}
_AUTO_INT4_GROUP = 64


class NNCFEngine(Engine):
    name = "nncf"
    dtypes = ("int8", "int8_sym", "int4", "int4_sym")
    default_dtype = "int8_sym"
    modes = ("post",)
    requires = ("nncf",)
    options = NNCFOptions

    def __init__(self, dtype=None, mode="post", options=None, compute_dtype=torch.bfloat16, cache_dir=None):
        super().__init__(dtype, mode, options, compute_dtype, cache_dir)
        self.device: torch.device | None = None

    @property
    def bits(self) -> int:
        return 4 if self.dtype.startswith("int4") else 8

    def group_size(self) -> int | None:
        """The group size passed to NNCF (None: per channel, NNCF's only int8 layout)."""
        size = int(self.settings["group_size"])
        if self.bits == 8:
            return None
        return _AUTO_INT4_GROUP if size == 0 else size

    def check_platform(self, device):
        super().check_platform(device)
        self.device = torch.device(device)
        if self.settings["int8_matmul"]:
            if self.dtype != "int8_sym":
                raise Unsupported("nncf int8_matmul: direct INT8 MatMul needs symmetric int8 (int8_sym)")
            raise Unsupported("nncf int8_matmul: direct INT8 MatMul is not implemented yet "
                              "(it is to reuse the SDNQ quantized-matmul kernels)")
        size = int(self.settings["group_size"])
        if self.bits == 8 and size > 0:
            raise Unsupported(f"nncf {self.dtype}: NNCF compresses int8 per output channel only; "
                              f"group_size={size} needs an int4 dtype (use 0 or -1)")

    def compile_decompress(self) -> bool:
        setting = self.settings["compile_decompress"]
        if setting is None:
            on_cuda = self.device is not None and self.device.type == "cuda"
            return on_cuda and importlib.util.find_spec("triton") is not None
        return bool(setting)

    def quantize(self, name, module):
        import nncf
        from nncf.quantization.advanced_parameters import (AdvancedCompressionParameters,
                                                           GroupSizeFallbackMode)

        kwargs = {"mode": getattr(nncf.CompressWeightsMode, _MODES[self.dtype]),
                  "dataset": nncf.Dataset([example_inputs(module)])}
        if self.bits == 4:
            # ratio=1 + all_layers: every Linear in 4 bit, as SD.Next does (NNCF's LLM default
            # keeps embeddings and the last layer in int8).
            kwargs.update(group_size=self.group_size(), ratio=1.0, all_layers=True,
                          advanced_parameters=AdvancedCompressionParameters(
                              group_size_fallback_mode=GroupSizeFallbackMode.ADJUST))
        if not self.settings["quant_conv"]:
            kwargs["ignored_scope"] = nncf.IgnoredScope(types=_conv_op_names(), validate=False)
        with torch.no_grad():
            compressed = nncf.compress_weights(module, **kwargs)
        if compressed is not module:  # NNCF's torch backend compresses in place; keep that contract
            raise RuntimeError("nncf.compress_weights returned a new module; expected in-place compression")
        for dec in decompressors(module):
            if self.settings["decompress_fp32"]:
                dec._buffers["_scale"] = dec._scale.float()
            if self.compile_decompress():
                _compile_decompressor(dec)
        return module

    def check_lora(self, fuse, device):
        raise Unsupported("NNCF hooks each weight's decompressor by the layer's module path; peft moves the layer "
                          "to <path>.base_layer, so its compressed int8 weight reaches the matmul undecompressed "
                          "(RuntimeError: self and mat2 must have the same dtype, but got BFloat16 and Char)")

    def count_quantized(self, module):
        targets = [m for m in module.modules() if _is_target(m, self.settings["quant_conv"])]
        done = [m for m in targets if m.weight.dtype in (torch.int8, torch.uint8)]
        return len(done), len(targets)

    def report(self):
        out = super().report()
        out["settings"].update(resolved_group_size=self.group_size(),
                               compile_decompress=self.compile_decompress())
        return out

    @classmethod
    def offload_unit(cls, path, module):
        """NNCF keeps each weight decompressor (it holds the scales and zero points) in the hook storage
        it adds to the model, at ``<model>.__nncf_hooks.<pre|post>_hooks.<key>.<id>`` where ``<key>`` is
        the hooked tensor's dotted name spelled with ``:`` plus ``__<port>``
        (``transformer_blocks:0:attn:to_q:weight__0``): a module under a key moves with the layer that
        owns that tensor."""
        parts = path.split(".")
        if "__nncf_hooks" in parts:  # nncf.torch.function_hook.wrapper.ATR_HOOK_STORAGE
            at = parts.index("__nncf_hooks")
            if len(parts) > at + 2:
                tensor = parts[at + 2].rsplit("__", 1)[0].split(":")
                return ".".join(parts[:at] + tensor[:-1])
        return super().offload_unit(path, module)


def decompressors(module: torch.nn.Module) -> list[torch.nn.Module]:
    """NNCF's weight decompressor hooks inside ``module``."""
    from nncf.torch.quantization.layers import BaseWeightsDecompressor
    return [m for m in module.modules() if isinstance(m, BaseWeightsDecompressor)]


def _decompress(x, scale, zero_point, packed_int4: bool, compressed_shape, zero_point_shape,
                result_shape, result_dtype: torch.dtype):
    """NNCF's four decompressor forwards as one pure function of tensors and shapes, so a single
    torch.compile(dynamic=True) graph serves every layer instead of one recompile per weight shape."""
    from nncf.torch.quantization.quantize_functions import unpack_int4, unpack_uint4
    if packed_int4:
        x = (unpack_uint4(x) if zero_point is not None else unpack_int4(x)).reshape(compressed_shape)
        if zero_point is not None:
            zero_point = unpack_uint4(zero_point).reshape(zero_point_shape)
    x = x.to(scale.dtype)
    out = (x - zero_point.to(scale.dtype)) * scale if zero_point is not None else x * scale
    if result_shape is not None:
        out = out.reshape(result_shape)
    return out.to(result_dtype) if result_dtype is not None else out


_compiled_decompress = None


def _compile_decompressor(dec: torch.nn.Module) -> None:
    """Route ``dec``'s forward through the compiled `_decompress`. NNCF runs decompressors inside
    its TorchFunctionMode hook executor, which dynamo cannot trace: the compiled call runs with
    torch-function handling disabled (the decompression is not part of NNCF's traced graph)."""
    global _compiled_decompress
    if _compiled_decompress is None:
        _compiled_decompress = torch.compile(_decompress, dynamic=True)
    packed = "INT4" in type(dec).__name__

    def forward(x):
        with torch._C.DisableTorchFunction():
            zero_point = getattr(dec, "_zero_point", None)
            # detached: plain tensors get dynamic shapes, parameters/buffers would be specialized
            return _compiled_decompress(
                x.detach(), dec._scale.detach(), zero_point.detach() if zero_point is not None else None, packed,
                tuple(getattr(dec, "compressed_weight_shape", ()) or ()) or None,
                tuple(getattr(dec, "zero_point_shape", ()) or ()) or None,
                tuple(dec.result_shape) if getattr(dec, "result_shape", None) is not None else None,
                dec.result_dtype)
    dec.forward = forward


def _is_target(m: torch.nn.Module, with_conv: bool) -> bool:
    kinds = (torch.nn.Linear, torch.nn.Embedding) + ((torch.nn.modules.conv._ConvNd,) if with_conv else ())
    return isinstance(m, kinds) and isinstance(getattr(m, "weight", None), torch.Tensor)


def _conv_op_names() -> list[str]:
    from nncf.torch.graph.operator_metatypes import CONVOLUTION_METATYPES
    names = set()
    for metatype in CONVOLUTION_METATYPES:
        for functions in metatype.module_to_function_names.values():
            names.update(functions)
    return sorted(names)


# -- example inputs -----------------------------------------------------------------------------
def example_inputs(module: torch.nn.Module, batch: int = 1, tokens: int = 8) -> dict[str, torch.Tensor]:
    """Correctly shaped dummy forward kwargs for a pipeline component, built from its config.

    Shapes are minimal (NNCF's trace does not depend on them). Covers FLUX-style transformers,
    UNet2DConditionModel (SDXL's added text/time conditioning included), AutoencoderKL and
    transformers text encoders (CLIP, T5). Anything else raises `Unsupported`.
    """
    param = next(module.parameters())
    device = param.device
    dtype = param.dtype if param.is_floating_point() else torch.bfloat16
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    config = getattr(module, "config", None)
    kind = type(module).__name__
    get = (lambda key, default=None: getattr(config, key, default) if not isinstance(config, dict)
           else config.get(key, default))

    if get("joint_attention_dim") is not None and get("pooled_projection_dim") is not None:
        # FLUX (FluxTransformer2DModel and relatives): packed latent tokens + text tokens + ids.
        image_tokens = 16
        kwargs = {"hidden_states": randn(batch, image_tokens, get("in_channels")),
                  "encoder_hidden_states": randn(batch, tokens, get("joint_attention_dim")),
                  "pooled_projections": randn(batch, get("pooled_projection_dim")),
                  "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
                  "img_ids": torch.zeros(image_tokens, 3, device=device, dtype=dtype),
                  "txt_ids": torch.zeros(tokens, 3, device=device, dtype=dtype),
                  "return_dict": False}
        if get("guidance_embeds"):
            kwargs["guidance"] = torch.full((batch,), 3.5, device=device, dtype=dtype)
        return kwargs
    if get("cross_attention_dim") is not None and get("block_out_channels") is not None:
        # UNet2DConditionModel (SD 1.x / SDXL).
        size = 2 ** len(get("block_out_channels"))
        cross = get("cross_attention_dim")
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        kwargs = {"sample": randn(batch, get("in_channels"), size, size),
                  "timestep": torch.tensor(500, device=device),
                  "encoder_hidden_states": randn(batch, tokens, cross),
                  "return_dict": False}
        if get("addition_embed_type") == "text_time":
            time_dim = get("addition_time_embed_dim")
            text_dim = get("projection_class_embeddings_input_dim") - 6 * time_dim
            kwargs["added_cond_kwargs"] = {"text_embeds": randn(batch, text_dim),
                                           "time_ids": randn(batch, 6).abs() * 100}
        return kwargs
    if get("latent_channels") is not None and get("block_out_channels") is not None:
        # AutoencoderKL: encode + decode of a small image.
        size = 2 ** len(get("block_out_channels"))
        return {"sample": randn(batch, get("in_channels"), size, size), "return_dict": False}
    if get("vocab_size") is not None:
        # transformers text encoders (CLIPTextModel[WithProjection], T5EncoderModel).
        ids = torch.randint(0, get("vocab_size"), (batch, tokens), generator=gen).to(device)
        return {"input_ids": ids}
    raise Unsupported(f"nncf needs example inputs to trace '{kind}' and has no builder for it")
