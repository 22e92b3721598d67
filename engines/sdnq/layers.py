"""Quantized drop-in layers: `SDNQLinear` (an nn.Linear) and `SDNQConv2d` (an nn.Conv2d).

Storage is plain tensors, so ``.to()``, accelerate offload hooks, ``state_dict`` and
`engines.base.module_nbytes` see the real packed bytes:

* ``qweight`` - Parameter (requires_grad=False) of the packed codes (see `quantize.QuantizedWeight`);
  a Parameter rather than a buffer so offload hooks move it with the layer's other weights.
* ``scale`` / ``zero_point`` - buffers, ``[rows, groups]``; ``zero_point`` only for uint types.
* ``bias`` - Parameter in the compute dtype (or None).

``layer.weight`` is a read-only property that dequantizes (for code that inspects the weight,
e.g. peft reading its dtype/device); the forward pass never goes through it. Subclassing the torch
layer types lets diffusers' LoRA loading (peft) wrap these layers as it wraps plain ones; the base
weights are never rewritten (``fuse_lora`` is not supported: the quantized weight is read-only).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from engines.sdnq import triton_dequant, triton_matvec
from engines.sdnq.config import SDNQConfig
from engines.sdnq.dtypes import conv_weight_type, supports_quantized_matmul, weight_type
from engines.sdnq.quantize import QuantizedWeight, dequantize_2d, quantize_weight

_COMPILED: dict = {}

# Attributes of nn.Conv2d copied to the quantized layer (what Conv2d.forward and peft read).
_CONV_ATTRS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "padding_mode", "transposed", "output_padding",
               "_reversed_padding_repeated_twice")


_KERNEL_FAILED: list = []


def _kernel_failed(err: Exception) -> None:
    """Record that a Triton kernel failed: from now on this process uses the torch path (said once).
    Under torch.compile the error propagates (the compiled graph cannot switch paths)."""
    if torch.compiler.is_compiling():
        raise err
    _KERNEL_FAILED.append(err)
    warnings.warn(f"SDNQ's Triton kernels failed ({type(err).__name__}: {err}); using the "
                  "torch.compile'd dequantization instead")


def _use_triton_kernel(layer) -> bool:
    """The Triton dequantization kernel (`triton_dequant`) serves this layer: CUDA, a supported layout,
    and the kernel has not failed in this process."""
    return (not _KERNEL_FAILED and layer.qweight.is_cuda and triton_dequant.enabled(layer.qweight.device)
            and triton_dequant.supports(layer.weight_type, layer.group_size, layer.qweight.device))


def _triton_available() -> bool:
    try:
        from torch.utils._triton import has_triton
        return has_triton()
    except Exception:
        return False


#: Graphs the compiled dequantization may keep: one per (weight type, group layout, dtype) that a model
#: really has. Dynamo's default limit (8) is below what FLUX's layer zoo needs.
DEQUANTIZE_RECOMPILE_LIMIT = 64


def _compiled_dequantize():
    """torch.compile'd `dequantize_2d` (dynamic shapes). Not fullgraph: past the recompile limit a
    call falls back to eager instead of failing the run."""
    fn = _COMPILED.get("dequantize")
    if fn is None:
        import torch._dynamo.config as dynamo_config

        for knob in ("recompile_limit", "cache_size_limit"):  # renamed across torch releases
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), DEQUANTIZE_RECOMPILE_LIMIT))
        fn = _COMPILED["dequantize"] = torch.compile(dequantize_2d, dynamic=True)
    return fn


class SDNQLayerMixin:
    """State and dequantization shared by the quantized layer types."""

    weight_type: str
    group_size: int
    quant_shape: tuple[int, ...]
    use_quantized_matmul: bool
    dequantize_fp32: bool
    compile_dequantize: bool

    def _set_quantized(self, qw: QuantizedWeight, bias: torch.Tensor | None, config: SDNQConfig,
                       use_quantized_matmul: bool) -> None:
        self.weight_type = qw.weight_type
        self.group_size = qw.group_size
        self.quant_shape = tuple(qw.shape)
        self.compute_dtype = config.compute_dtype
        self.use_quantized_matmul = use_quantized_matmul
        self.dequantize_fp32 = config.dequantize_fp32
        self.compile_dequantize = config.compile_dequantize
        self.register_parameter("qweight", nn.Parameter(qw.data, requires_grad=False))
        self.register_buffer("scale", qw.scale)
        self.register_buffer("zero_point", qw.zero_point)
        if bias is not None:
            bias = nn.Parameter(bias.detach().to(config.compute_dtype), requires_grad=False)
        self.register_parameter("bias", bias)

    # -- weight --------------------------------------------------------------------------
    def dequantize_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.compute_dtype
        if self.compile_dequantize and _use_triton_kernel(self):
            try:
                w = triton_dequant.dequantize(self.qweight, self.scale, self.zero_point, self.weight_type,
                                              self.group_size, dtype)
                return w.reshape(self.quant_shape)
            except Exception as err:  # a Triton / driver problem: the torch path from now on, said once
                _kernel_failed(err)
        fn = dequantize_2d
        if (self.compile_dequantize and self.qweight.is_cuda and not torch.compiler.is_compiling()
                and _triton_available()):
            fn = _compiled_dequantize()
        w = fn(self.qweight, self.scale, self.zero_point, self.weight_type, self.group_size,
               dtype, self.dequantize_fp32)
        return w.reshape(self.quant_shape)

    @property
    def weight(self) -> torch.Tensor:
        """Dequantized copy of the weight (read-only; the layer keeps only the packed form)."""
        return self.dequantize_weight()

    @weight.setter
    def weight(self, value):
        raise AttributeError(f"{type(self).__name__}.weight is read-only: the layer stores a "
                             f"quantized weight ({self.weight_type}); re-quantize to change it")

    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.qweight.data, self.scale, self.zero_point, self.weight_type,
                               self.quant_shape, self.group_size)

    def layer_config(self) -> dict:
        """What `serialize` needs to rebuild an empty layer of this shape."""
        return {"weight_type": self.weight_type, "group_size": self.group_size,
                "shape": list(self.quant_shape), "has_bias": self.bias is not None,
                "has_zero_point": self.zero_point is not None,
                "use_quantized_matmul": self.use_quantized_matmul,
                "packed_numel": self.qweight.numel(), "data_dtype": str(self.qweight.dtype)[6:],
                "scale_dtype": str(self.scale.dtype)[6:]}

    def _qextra_repr(self) -> str:
        return (f"weight_type={self.weight_type}, group_size={self.group_size}, "
                f"quantized_matmul={self.use_quantized_matmul}")


def _matmul_shape_ok(n: int, k: int) -> bool:
    """INT8 / FP8 GEMMs (cuBLAS, Triton) want both dimensions multiples of 16."""
    return n % 16 == 0 and k % 16 == 0


class SDNQLinear(SDNQLayerMixin, nn.Linear):
    """nn.Linear holding an SDNQ-quantized weight."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None, config: SDNQConfig,
                 use_quantized_matmul: bool = False):
        nn.Module.__init__(self)
        self.out_features, self.in_features = qw.shape
        self._set_quantized(qw, bias, config, use_quantized_matmul)

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: SDNQConfig, device: torch.device | None = None,
                    home: torch.device | None = None):
        return cls.from_weight(linear.weight, linear.bias, config, device, home)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, config: SDNQConfig,
                    device: torch.device | None = None, home: torch.device | None = None) -> "SDNQLinear":
        """Quantize ``weight`` (on ``device`` if given); the result lives on ``home`` (default: ``weight``'s
        device)."""
        home = weight.device if home is None else home
        qmm = (config.use_quantized_matmul and supports_quantized_matmul(config.weight_type)
               and _matmul_shape_ok(*weight.shape))
        group = -1 if qmm else config.group_size
        qw = _quantize_on(weight, config.weight_type, group, False, config, device, home)
        return cls(qw, None if bias is None else bias.to(home), config, qmm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_quantized_matmul:
            from engines.sdnq.matmul import quantized_linear
            return quantized_linear(self, x)
        # `applies` rejects many-row inputs first, so they check the kernel's support once (in dequantize_weight)
        if self.compile_dequantize and triton_matvec.applies(
                x, self.weight_type, self.group_size, self.in_features) and _use_triton_kernel(self):
            try:
                return triton_matvec.linear(x, self.qweight, self.scale, self.zero_point, self.bias,
                                            self.weight_type, self.group_size)
            except Exception as err:
                _kernel_failed(err)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._qextra_repr()}")


class SDNQConv2d(SDNQLayerMixin, nn.Conv2d):
    """nn.Conv2d holding an SDNQ-quantized weight (grouped along in_channels x kh x kw)."""

    def __new__(cls, *args, **kwargs):
        # peft builds LoRA conv layers with ``type(base_layer)(in, r, kernel, stride, ...)``:
        # those must be ordinary convolutions.
        if args and isinstance(args[0], int):
            return nn.Conv2d(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None, config: SDNQConfig,
                 use_quantized_matmul: bool = False, conv_attrs: dict | None = None):
        nn.Module.__init__(self)
        for key, value in (conv_attrs or {}).items():
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        self._set_quantized(qw, bias, config, use_quantized_matmul)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, config: SDNQConfig, device: torch.device | None = None,
                  weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  home: torch.device | None = None):
        """Quantize ``conv`` (or ``weight``/``bias`` given for it, e.g. a meta conv in pre mode); the result
        lives on ``home`` (default: the weight's device)."""
        weight = conv.weight if weight is None else weight
        home = weight.device if home is None else home
        bias = conv.bias if bias is None and weight is conv.weight else bias
        wtype = conv_weight_type(config.weight_type)
        qmm = (config.quantized_matmul_conv and supports_quantized_matmul(wtype)
               and conv.groups == 1 and _matmul_shape_ok(weight.shape[0], weight[0].numel()))
        group = -1 if qmm else config.group_size
        qw = _quantize_on(weight, wtype, group, True, config, device, home)
        attrs = {k: getattr(conv, k) for k in _CONV_ATTRS}
        return cls(qw, None if bias is None else bias.to(home), config, qmm, attrs)

    def conv_attrs(self) -> dict:
        return {k: getattr(self, k) for k in _CONV_ATTRS}

    def layer_config(self) -> dict:
        out = super().layer_config()
        out["conv"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.conv_attrs().items()}
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_quantized_matmul:
            from engines.sdnq.matmul import quantized_conv2d
            return quantized_conv2d(self, x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.dequantize_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, {self._qextra_repr()}")


def _quantize_on(weight: torch.Tensor, wtype: str, group: int, is_conv: bool, config: SDNQConfig,
                 device: torch.device | None, home: torch.device) -> QuantizedWeight:
    work = weight.detach()
    if device is not None and not weight.is_meta and device.type != weight.device.type:
        work = work.to(device, non_blocking=False)
    qw = quantize_weight(work, wtype, group, is_conv, config.scale_dtype)
    if qw.data.device != home:
        qw.data, qw.scale = qw.data.to(home), qw.scale.to(home)
        qw.zero_point = None if qw.zero_point is None else qw.zero_point.to(home)
    return qw


def _torch_dtype(name) -> torch.dtype:
    """A dtype named in a checkpoint's layer table; anything that is not a torch dtype is refused."""
    dtype = getattr(torch, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"SDNQ checkpoint names dtype {name!r}, which is not a torch dtype")
    return dtype


def empty_layer(config: dict, model_config: SDNQConfig, device="cpu") -> nn.Module:
    """A quantized layer with uninitialised storage of the right shapes (filled by load_state_dict)."""
    shape = tuple(config["shape"])
    rows, k = shape[0], math.prod(shape[1:])
    groups = k // config["group_size"]
    data_dtype = _torch_dtype(config["data_dtype"])
    data_shape = (config["packed_numel"],) if weight_type(config["weight_type"]).packed else (rows, k)
    scale_dtype = _torch_dtype(config["scale_dtype"])
    qw = QuantizedWeight(torch.empty(data_shape, dtype=data_dtype, device=device),
                         torch.empty(rows, groups, dtype=scale_dtype, device=device),
                         torch.empty(rows, groups, dtype=scale_dtype, device=device)
                         if config["has_zero_point"] else None,
                         config["weight_type"], shape, config["group_size"])
    bias = torch.empty(rows, dtype=model_config.compute_dtype, device=device) if config["has_bias"] else None
    if "conv" in config:
        return SDNQConv2d(qw, bias, model_config, config["use_quantized_matmul"], config["conv"])
    return SDNQLinear(qw, bias, model_config, config["use_quantized_matmul"])
