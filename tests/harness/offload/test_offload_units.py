"""`harness.offload.balanced.units`: placement units (own tensors; quantized layers whole, as the engine says)."""
import pytest
import torch
from torch import nn

from engines.base import module_nbytes
from harness.offload.balanced.units import build_units
from tests.harness.offload.toys import (QUANTIZED, QUANTIZED_IDS, Toy, assert_offloaded_output_matches, engine,
                                        quantized_toy)


def test_units_are_modules_with_their_own_tensors_in_module_order():
    model = Toy(blocks=2)
    units = build_units(model)
    assert [u.name for u in units] == ["embed", "blocks.0", "blocks.0.proj", "blocks.0.norm", "blocks.1",
                                       "blocks.1.proj", "blocks.1.norm", "out"]
    block = units[1]
    assert not block.subtree and block.nbytes == 32 * 2  # only `gate`: its children are their own units
    assert sum(u.nbytes for u in units) == module_nbytes(model)
    assert not any(u.generic for u in units)  # plain tensors: moved by swapping .data


def test_tied_weights_are_one_unit():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

    units = build_units(Tied())
    assert len(units) == 1 and len(units[0].roots) == 2 and units[0].nbytes == 10 * 8 * 4


@pytest.mark.parametrize("name, dtype", QUANTIZED, ids=QUANTIZED_IDS)
def test_quantized_layers_are_atomic_with_their_scales(name, dtype):
    model, eng = quantized_toy(name, dtype)
    units = {u.name: u for u in build_units(model, eng)}
    for layer_name in ("embed", "blocks.0.proj", "out"):
        unit = units[layer_name]
        layer = model.get_submodule(layer_name)
        assert unit.subtree and unit.roots == [layer]
        # every byte of the layer (packed data, scales, zero points, bias) moves as one
        assert unit.nbytes == module_nbytes(layer) > 0
        assert not any(n.startswith(layer_name + ".") for n in units)  # nothing inside it is a unit of its own
    assert units["blocks.0.norm"].subtree is False
    assert sum(u.nbytes for u in units.values()) == module_nbytes(model)
    assert_offloaded_output_matches(model, torch.randn(2, 64, dtype=torch.bfloat16), engine=eng)


TENSOR_SUBCLASSES = [("torchao", "int8"), ("quanto", "int8"), ("gguf", "q8_0"), ("bnb", "int8")]


@pytest.mark.parametrize("name, dtype", TENSOR_SUBCLASSES, ids=[f"{e}-{d}" for e, d in TENSOR_SUBCLASSES])
def test_without_an_engine_layers_holding_tensor_subclasses_are_atomic(name, dtype):
    model, _ = quantized_toy(name, dtype)
    units = {u.name: u for u in build_units(model)}
    assert units["blocks.0.proj"].subtree and units["blocks.0.proj"].roots == [model.blocks[0].proj]
    assert units["blocks.0.norm"].subtree is False


def test_without_an_engine_sdnq_layers_are_units_of_their_own_tensors():
    """SDNQ stores plain tensors: only its engine makes the layer atomic."""
    model, eng = quantized_toy("sdnq", "int8")
    generic = {u.name: u for u in build_units(model)}
    assert not generic["blocks.0.proj"].subtree
    assert {u.name: u for u in build_units(model, eng)}["blocks.0.proj"].subtree


def test_nncf_decompressor_moves_with_its_layer():
    nncf = pytest.importorskip("nncf")
    eng = engine("nncf", "int8_sym")
    model = Toy(blocks=1, width=64)
    nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                          dataset=nncf.Dataset([torch.randn(1, 64, dtype=torch.bfloat16)]))
    units = {u.name: u for u in build_units(model, eng)}
    proj = units["blocks.0.proj"]
    kinds = [type(m).__name__ for m in proj.roots]
    assert kinds[0] == "Linear" and len(kinds) == 2 and "Decompressor" in kinds[1]
    assert proj.nbytes == module_nbytes(model.blocks[0].proj) + module_nbytes(proj.roots[1])
    assert not any(n.startswith("<nncf>") for n in units)  # no orphan decompressor
    assert not any("__nncf_hooks" in n for n in units)  # every decompressor is with its layer
    assert_offloaded_output_matches(model, torch.randn(2, 64, dtype=torch.bfloat16), engine=eng)


def test_peft_lora_around_a_quantized_layer_is_one_unit():
    peft = pytest.importorskip("peft")
    model, eng = quantized_toy("sdnq", "int8")
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["proj"]), model)
    units = {u.name: u for u in build_units(model, eng)}
    wrapper = model.blocks[0].proj
    assert units["blocks.0.proj"].roots == [wrapper] and units["blocks.0.proj"].subtree
    assert units["blocks.0.proj"].nbytes == module_nbytes(wrapper)


def test_a_module_tied_to_a_missing_owner_is_a_unit_of_its_own():
    class Rule:
        @staticmethod
        def offload_unit(path, module):
            return "nowhere" if path == "blocks.0.norm" else None

    units = {u.name: u for u in build_units(Toy(blocks=1), Rule())}
    assert "blocks.0.norm" in units and not units["blocks.0.norm"].subtree
