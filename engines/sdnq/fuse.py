"""Fused projections: an attention's query, key and value layers as one quantized layer.

Three projections that read the same input cost three GEMMs and, with the quantized matmul, three
quantizations of that input; one layer whose rows are theirs stacked costs one of each, with bigger, more
efficient GEMMs. SDNQ's scales are per output row (and per group along the input), so stacking quantized
layers is exact: the fused layer's codes, scales, zero points and bias are the parts' own, concatenated, and
its output is the parts' outputs side by side, bit for bit.

Only attention classes whose processor reads the fused layer when ``fused_projections`` is set are fused
(`FUSABLE`, by class name: diffusers' FLUX attention reads ``to_qkv`` and ``to_added_qkv`` and nothing
else of the projections). The parts are removed, so the model holds each weight once. A model with fused
projections no longer has ``to_q`` / ``to_k`` / ``to_v``: LoRA files, which name those layers, cannot load.
"""
from __future__ import annotations

import torch
from torch import nn

from engines.sdnq.config import SDNQConfig
from engines.sdnq.dtypes import weight_type
from engines.sdnq.layers import SDNQLinear
from engines.sdnq.quantize import QuantizedWeight

#: Attention classes (diffusers class names) whose processor uses only the fused layers once fused, each with
#: its groups: (fused layer name, the layers it replaces).
FUSABLE = {
    "FluxAttention": (("to_qkv", ("to_q", "to_k", "to_v")),
                      ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))),
}


def fusable(model: nn.Module) -> bool:
    """Whether ``model`` has an attention this module fuses."""
    return any(type(m).__name__ in FUSABLE for m in model.modules())


def compatible(parts: list) -> bool:
    """Whether ``parts`` can be stacked exactly: `SDNQLinear` layers of one input width, weight type, group
    size, compute path and storage, and, for bit-packed codes, whole packing chunks each."""
    if not parts or not all(isinstance(p, SDNQLinear) for p in parts):
        return False
    first = parts[0]
    wt = weight_type(first.weight_type)
    for p in parts:
        if (p.in_features != first.in_features or p.weight_type != first.weight_type
                or p.group_size != first.group_size or p.use_quantized_matmul != first.use_quantized_matmul
                or (p.zero_point is None) != (first.zero_point is None) or p.qweight.dtype != first.qweight.dtype
                or p.scale.dtype != first.scale.dtype or p.qweight.device != first.qweight.device):
            return False
        if wt.packed and (p.out_features * p.in_features) % 8:
            return False
    return True


def concat(parts: list[SDNQLinear]) -> SDNQLinear:
    """One `SDNQLinear` whose output rows are ``parts``' rows in order (``compatible(parts)`` must hold)."""
    if not compatible(parts):
        raise ValueError("fused projections need layers of one input width, weight type, group size and path")
    first = parts[0]
    rows = sum(p.out_features for p in parts)
    packed = weight_type(first.weight_type).packed
    data = torch.cat([p.qweight.data.reshape(-1) if packed else p.qweight.data for p in parts])
    zero = None if first.zero_point is None else torch.cat([p.zero_point for p in parts])
    qw = QuantizedWeight(data, torch.cat([p.scale for p in parts]), zero, first.weight_type,
                         (rows, *first.quant_shape[1:]), first.group_size)
    if all(p.bias is None for p in parts):
        bias = None
    else:
        bias = torch.cat([p.bias if p.bias is not None else p.qweight.new_zeros(p.out_features, dtype=first.compute_dtype)
                          for p in parts])
    config = SDNQConfig(weight_type=first.weight_type, compute_dtype=first.compute_dtype,
                        dequantize_fp32=first.dequantize_fp32, compile_dequantize=first.compile_dequantize)
    return SDNQLinear(qw, bias, config, first.use_quantized_matmul)


@torch.no_grad()
def fuse_projections(model: nn.Module) -> int:
    """Fuse the projection groups of every `FUSABLE` attention in ``model`` (in place) whose present groups
    are all made of `SDNQLinear` layers (an attention with any other layer there, e.g. one left unquantized,
    stays as it is); returns how many fused layers were made."""
    made = 0
    for module in model.modules():
        groups = FUSABLE.get(type(module).__name__)
        if groups is None or getattr(module, "fused_projections", False):
            continue
        present = [(fused, names, [getattr(module, n, None) for n in names]) for fused, names in groups]
        present = [g for g in present if any(p is not None for p in g[2])]
        if not present or not all(compatible(parts) for _, _, parts in present):
            continue
        for fused_name, names, parts in present:
            setattr(module, fused_name, concat(parts))
            for n in names:
                delattr(module, n)
            made += 1
        module.fused_projections = True
    return made
