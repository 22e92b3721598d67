"""The engine's options (`SDNQOptions`, the schema a config sets) and `SDNQConfig`, the resolved settings
of one quantization as data (JSON round trip, saved with a quantized checkpoint)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from engines.options import option
from engines.sdnq.dtypes import ALL_TYPES


@dataclass(frozen=True)
class SDNQOptions:
    group_size: int = option(0, "0 auto (linear 2**(2+bits), conv 2**(1+bits)); -1 none; >0 that size", min=-1)
    quant_conv: bool = option(False, "also quantize Conv2d (SDXL UNet); sub-4-bit types use uint4 there")
    use_quantized_matmul: bool = option(False, "INT8 (int types) / FP8 (float8_e4m3fn, float8_e5m2) matmul with "
                                               "per-token activation quantization")
    quantized_matmul_conv: bool = option(False, "the same for convolutions")
    fuse_qkv: bool = option(False, "fuse each FLUX attention's query / key / value layers (and the text "
                                   "stream's) into one: one GEMM and one activation quantization instead of "
                                   "three, exact; the separate layers are gone, so no LoRA")
    quantized_attention: str = option("none", "FLUX attention on quantized operands: int8 (Q x K^T in INT8, "
                                              "per-token scales) or int8-fp8 (P x V in FP8 too, per-channel V "
                                              "scale); fp32 softmax; a Triton kernel on CUDA sm_89+, an fp32 "
                                              "emulation on CPU", choices=("none", "int8", "int8-fp8"))
    dequantize_fp32: bool = option(False, "dequantize in fp32 (slower, slightly more exact)")
    compile_dequantize: bool = option(True, "on CUDA + Triton: the Triton kernels where they apply, else "
                                            "torch.compile")
    quantize_device: str = option("auto", "where quantization math runs (auto: the GPU when present)",
                                  choices=("auto", "cpu", "cuda"))
    dequant_backend: str = option("auto", "dequantization kernel: auto (Triton on CUDA where it applies) or "
                                          "torch; default from $SDNQ_DEQUANT_BACKEND", choices=("auto", "torch"),
                                  env="SDNQ_DEQUANT_BACKEND")
    fp8_fast_accum: bool = option(True, "FP8 matmul: the tensor cores' fast accumulation (as torchao's float8 "
                                        "uses); false: the full-precision accumulation, slower")
    int8_backend: str = option("auto", "INT8 matmul kernel: auto (Triton on CUDA when available), triton or "
                                       "torch (torch._int_mm); default from $SDNQ_INT8_BACKEND",
                               choices=("auto", "triton", "torch"), env="SDNQ_INT8_BACKEND")


#: The options that shape the quantization itself (the rest choose kernels at run time).
QUANTIZATION_OPTIONS = ("group_size", "quant_conv", "use_quantized_matmul", "quantized_matmul_conv",
                        "dequantize_fp32", "compile_dequantize", "quantize_device")

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class SDNQConfig:
    weight_type: str = "int8"
    group_size: int = 0
    quant_conv: bool = False
    use_quantized_matmul: bool = False
    quantized_matmul_conv: bool = False
    dequantize_fp32: bool = False
    compile_dequantize: bool = True
    quantize_device: str = "auto"
    compute_dtype: torch.dtype = torch.bfloat16
    #: Module names (exact, or a dotted prefix) left unquantized.
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.weight_type not in ALL_TYPES:
            raise ValueError(f"unknown SDNQ weight type '{self.weight_type}'; valid: {', '.join(ALL_TYPES)}")
        if self.quantize_device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"quantize_device must be auto, cpu or cuda, not '{self.quantize_device}'")
        if not isinstance(self.group_size, int) or self.group_size < -1:
            raise ValueError(f"group_size must be 0 (auto), -1 (none) or a positive int, not {self.group_size!r}")
        if isinstance(self.compute_dtype, str):
            self.compute_dtype = _DTYPES[self.compute_dtype]
        self.skip = tuple(self.skip)

    @property
    def scale_dtype(self) -> torch.dtype:
        """Scales / zero points: bf16 for a bf16 model, fp32 otherwise (fp16 would underflow)."""
        return torch.bfloat16 if self.compute_dtype == torch.bfloat16 else torch.float32

    def quantize_on(self) -> torch.device | None:
        """Device for the quantization math; None = wherever the weight is."""
        if self.quantize_device == "cpu":
            return torch.device("cpu")
        if self.quantize_device == "cuda" or (self.quantize_device == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["compute_dtype"] = str(self.compute_dtype).removeprefix("torch.")
        out["skip"] = list(self.skip)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SDNQConfig":
        return cls(**data)
