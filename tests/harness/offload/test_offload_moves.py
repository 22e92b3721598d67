"""`harness.offload.balanced.moves`: which tensors move by storage swaps, and what a move does."""
import pytest
import torch
from torch import nn

from harness.offload.balanced import moves
from harness.offload.balanced.units import build_units


class Tagged(nn.Parameter):
    """A Parameter subclass carrying metadata only (as diffusers' GGUFParameter does)."""


class Stateful(nn.Parameter):
    """A Parameter subclass carrying a tensor outside its storage (as bitsandbytes' scales are)."""


class OwnTo(nn.Parameter):
    def to(self, *args, **kwargs):  # moves itself (bitsandbytes quantizes on the way to the GPU)
        return super().to(*args, **kwargs)


def _tagged():
    p = Tagged(torch.zeros(2), requires_grad=False)
    p.quant_type, p.quant_shape = 8, (2, 1)
    return p


def _stateful():
    p = Stateful(torch.zeros(2), requires_grad=False)
    p.scales = torch.ones(2)
    return p


@pytest.mark.parametrize("make, plain", [
    (lambda: torch.zeros(2), True),
    (lambda: nn.Parameter(torch.zeros(2)), True),
    (_tagged, True),
    (_stateful, False),
    (lambda: OwnTo(torch.zeros(2)), False),
    (lambda: torch.zeros(2).as_subclass(type("Sub", (torch.Tensor,), {})), False),
], ids=["tensor", "parameter", "metadata-only-parameter-subclass", "parameter-with-tensor-state",
        "parameter-with-own-to", "tensor-subclass"])
def test_which_tensors_move_by_storage_swaps(make, plain):
    assert moves.is_plain(make()) is plain


def test_gguf_parameters_move_by_storage_swaps():
    gguf = pytest.importorskip("diffusers.quantizers.gguf.utils")
    import gguf as gguf_lib

    qt = gguf_lib.GGMLQuantizationType.Q8_0
    block, size = gguf_lib.GGML_QUANT_SIZES[qt]
    assert moves.is_plain(gguf.GGUFParameter(torch.zeros(4, size, dtype=torch.uint8), quant_type=qt))


def test_a_move_to_the_host_keeps_the_cpu_copy_and_copies_nothing():
    layer = nn.Linear(8, 8)
    weight = layer.weight.data
    (unit,) = build_units(nn.Sequential(layer))
    assert moves.move(unit, torch.device("cpu"), True) == unit.nbytes
    assert unit.on_device
    assert moves.move(unit, torch.device("cpu"), False) == 0
    assert not unit.on_device and layer.weight.data.data_ptr() == weight.data_ptr()


def test_moves_run_outside_torch_function_modes():
    seen = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    (unit,) = build_units(nn.Sequential(nn.Linear(4, 4)))
    cpu = torch.device("cpu")
    with Spy():
        moves.move(unit, cpu, True)
        with moves.outside_function_modes():
            assert torch._C._len_torch_function_stack() == 0
        assert torch._C._len_torch_function_stack() == 1  # restored
    assert seen == []


def test_pinning_is_tried_once_and_a_unit_that_cannot_be_pinned_stays_pageable(monkeypatch):
    (unit,) = build_units(nn.Sequential(nn.Linear(4, 4)))
    calls = []

    def refuse(self):
        calls.append(1)
        raise RuntimeError("no host allocator")

    monkeypatch.setattr(torch.Tensor, "pin_memory", refuse)
    moves.pin(unit)
    moves.pin(unit)
    assert unit.pin_tried and not unit.pinned and len(calls) == 1
