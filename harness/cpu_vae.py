"""The VAE on a CPU without BF16 convolutions.

torch runs a BF16 convolution on a CPU without oneDNN BF16 support (no AVX-512 BF16 / AMX) through its
generic fallback kernel (``aten::_slow_conv2d_forward``): a tiny VAE's 192x192 decode took 12.6 s there
against 0.09 s in float32 on the 2-core CI machine. On such a CPU a cell's VAE decodes in float32, as
diffusers' ``force_upcast`` does for FP16: the decoding modules (``post_quant_conv``, ``decoder``) are
upcast and ``decode`` casts its input up. Encoding stays BF16, so the latents an editing pipeline encodes
keep the pipeline's dtype. Every cell of a run, the BF16 reference included, does the same, and the load
report says so.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

#: What the load report says when the VAE was upcast.
NOTE = "decode in float32: this CPU has no BF16 convolutions (torch's fallback kernel is about 100x slower)"


def bf16_convolutions_native() -> bool:
    """Whether oneDNN runs BF16 convolutions on this CPU."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def upcast(pipe, device: torch.device) -> str | None:
    """Make ``pipe``'s VAE decode in float32 when ``device`` is a CPU without BF16 convolutions and the VAE
    is plain BF16 (not quantized) with a ``decoder``. Returns `NOTE` when it did, else None (nothing changed)."""
    vae = getattr(pipe, "vae", None)
    if device.type != "cpu" or not isinstance(getattr(vae, "decoder", None), nn.Module):
        return None
    params = [*vae.parameters(), *vae.buffers()]
    if not params or any(type(t) not in (torch.Tensor, nn.Parameter) for t in params):
        return None
    if {t.dtype for t in params if t.is_floating_point()} != {torch.bfloat16} or bf16_convolutions_native():
        return None
    for name in ("post_quant_conv", "decoder"):
        part = getattr(vae, name, None)
        if isinstance(part, nn.Module):
            part.to(torch.float32)
    vae.decode = _float32_input(vae.decode)
    return NOTE


def _float32_input(method):
    @functools.wraps(method)
    def call(z, *args, **kwargs):
        if isinstance(z, torch.Tensor) and z.is_floating_point():
            z = z.float()
        return method(z, *args, **kwargs)
    return call
