"""Bit packing: exact inverse, exact storage ratios."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.sdnq.pack import pack_bits, packed_numel, unpack_bits


def wid(wtype):
    return f"w-{wtype}"


@settings(max_examples=150, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_unpack_inverts_pack(bits, data):
    values = data.draw(st.lists(st.integers(0, 2 ** bits - 1), min_size=0, max_size=300))
    codes = torch.tensor(values, dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_numel(len(values), bits)
    assert torch.equal(unpack_bits(packed, bits, len(values)), codes)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 9), cols=st.integers(1, 40), seed=st.integers(0, 2 ** 16))
def test_roundtrip_of_2d_tensors(bits, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (rows, cols), generator=g, dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, codes.numel()).view(rows, cols), codes)


@pytest.mark.parametrize("bits,values,nbytes", [(7, 8, 7), (6, 4, 3), (5, 8, 5), (4, 2, 1), (3, 8, 3),
                                                (2, 4, 1), (1, 8, 1)], ids=lambda v: str(v))
def test_storage_ratio_is_exact(bits, values, nbytes):
    n = 8 * 1024
    assert packed_numel(n, bits) * values == n * nbytes
    assert pack_bits(torch.zeros(n, dtype=torch.uint8), bits).numel() * values == n * nbytes


def test_layout_is_little_endian_bitstream():
    # 4-bit: first code in the low nibble; 1-bit: code i is bit i.
    assert pack_bits(torch.tensor([1, 2], dtype=torch.uint8), 4).tolist() == [0x21, 0, 0, 0]  # padded to 8 codes
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1], dtype=torch.uint8), 1).tolist() == [0x81]
    # 6-bit: 4 codes of 63 fill 3 bytes.
    assert pack_bits(torch.full((4,), 63, dtype=torch.uint8), 6).tolist()[:3] == [255, 255, 255]


def test_large_tensor_in_chunks():
    codes = torch.randint(0, 32, (3_000_017,), dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(codes, 5), 5, codes.numel()), codes)
