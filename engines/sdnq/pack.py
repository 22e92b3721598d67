"""Bit packing of sub-byte integer codes into uint8 storage.

Layout: a little-endian bit stream. Code ``i`` (an unsigned value below ``2**bits``) occupies
bits ``[i*bits, (i+1)*bits)`` of the stream, and stream bit ``k`` is bit ``k % 8`` of byte
``k // 8``. Every group of 8 codes therefore fills exactly ``bits`` bytes, which gives the ratios
SD.Next documents: 7-bit 8 values in 7 bytes, 6-bit 4 in 3, 5-bit 8 in 5, 4-bit 2 in 1,
3-bit 8 in 3, 2-bit 4 in 1, 1-bit 8 in 1. Inputs whose length is not a multiple of 8 are padded
with zero codes up to the next multiple of 8 (at most 7 extra codes), so packed size is
``ceil(n / 8) * bits`` bytes. `unpack_bits` is the exact inverse given the original length.
"""
from __future__ import annotations

import torch

# Pack big tensors in slices so the int64 temporaries stay small (quantize-time peak memory).
_PACK_CHUNK = 1 << 23


def packed_numel(numel: int, bits: int) -> int:
    """Bytes used to pack ``numel`` codes of ``bits`` bits."""
    if bits == 8:
        return numel
    return -(-numel // 8) * bits


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes (any shape, values in ``[0, 2**bits)``) into a flat uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.view(-1, 8)
    out = torch.empty(groups.shape[0], bits, dtype=torch.uint8, device=flat.device)
    for start in range(0, groups.shape[0], _PACK_CHUNK // 8):
        out[start:start + _PACK_CHUNK // 8] = _pack_groups(groups[start:start + _PACK_CHUNK // 8], bits)
    return out.view(-1)


def _pack_groups(groups: torch.Tensor, bits: int) -> torch.Tensor:
    """[G, 8] codes -> [G, bits] bytes."""
    code_shift = torch.arange(8, device=groups.device, dtype=torch.int64) * bits
    word = (groups.to(torch.int64) << code_shift).sum(-1, keepdim=True)  # fields never overlap
    byte_shift = torch.arange(bits, device=groups.device, dtype=torch.int64) * 8
    return ((word >> byte_shift) & 0xFF).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack_bits`: flat uint8 codes of length ``numel``. Traceable by torch.compile."""
    if bits == 8:
        return packed.reshape(-1)[:numel]
    if 8 % bits == 0:  # 1, 2 and 4 bits: whole codes per byte, stay in uint8
        per_byte = 8 // bits
        shift = torch.arange(per_byte, device=packed.device, dtype=torch.uint8) * bits
        codes = (packed.reshape(-1, 1) >> shift) & (2 ** bits - 1)
        return codes.reshape(-1)[:numel]
    wide = torch.int32 if bits * 8 <= 31 else torch.int64
    byte_shift = torch.arange(bits, device=packed.device, dtype=wide) * 8
    word = (packed.reshape(-1, bits).to(wide) << byte_shift).sum(-1, keepdim=True, dtype=wide)
    code_shift = torch.arange(8, device=packed.device, dtype=wide) * bits
    codes = (word >> code_shift) & (2 ** bits - 1)
    return codes.to(torch.uint8).reshape(-1)[:numel]
