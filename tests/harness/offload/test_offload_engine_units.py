"""`Engine.offload_unit`: each engine names the modules that move whole, or with another layer, under
balanced offload. Asked of the engine class: no backend package is needed."""
import pytest
import torch
from torch import nn

from engines.base import Engine
from engines.registry import get_engine_class


class Packed(torch.Tensor):
    """A tensor subclass (as torchao / quanto weights are)."""


def _with_subclass_weight() -> nn.Module:
    m = nn.Linear(4, 4)
    m._parameters["weight"] = torch.zeros(4, 4).as_subclass(Packed)
    return m


def _layer_of(package: str, with_params: bool = True) -> nn.Module:
    """A module whose class lives in ``package`` (as the backend's own layer types do)."""
    cls = type("Layer", (nn.Linear if with_params else nn.GELU,), {"__module__": package})
    return cls(4, 4) if with_params else cls()


@pytest.mark.parametrize("path, module, expected", [
    ("blocks.0.proj", nn.Linear(4, 4), None),
    ("blocks.0.act", nn.GELU(), None),
    ("blocks.0.proj", _with_subclass_weight(), "blocks.0.proj"),
    ("", _with_subclass_weight(), ""),
], ids=["plain-linear", "no-tensors", "tensor-subclass-weight", "component-root"])
def test_the_generic_rule(path, module, expected):
    assert Engine.offload_unit(path, module) == expected


LIBRARY_LAYERS = [("bnb", "bitsandbytes.nn.modules"), ("quanto", "optimum.quanto.nn.qlinear"),
                  ("gguf", "diffusers.quantizers.gguf.utils"), ("torchao", "torchao.quantization.linear")]


@pytest.mark.parametrize("engine, package", LIBRARY_LAYERS, ids=[e for e, _ in LIBRARY_LAYERS])
def test_a_backend_layer_with_parameters_is_atomic(engine, package):
    cls = get_engine_class(engine)
    assert cls.offload_unit("blocks.0.proj", _layer_of(package)) == "blocks.0.proj"
    assert cls.offload_unit("blocks.0.act", _layer_of(package, with_params=False)) is None
    assert cls.offload_unit("blocks.0.proj", nn.Linear(4, 4)) is None  # not its layer: the generic rule
    assert cls.offload_unit("blocks.0.proj", _with_subclass_weight()) == "blocks.0.proj"


def test_an_sdnq_layer_is_atomic():
    from engines.sdnq.engine import SDNQEngine

    eng = SDNQEngine("int8")
    model = eng.quantize("transformer", nn.Sequential(nn.Linear(64, 64, dtype=torch.bfloat16)))
    layer = model[0]
    assert type(layer).__name__ == "SDNQLinear"
    assert SDNQEngine.offload_unit("0", layer) == "0"
    assert eng.offload_unit("0", layer) == "0"  # the same answer from an instance
    assert SDNQEngine.offload_unit("1", nn.Linear(4, 4)) is None


@pytest.mark.parametrize("path, owner", [
    ("__nncf_hooks.post_hooks.blocks:0:proj:weight__0.0", "blocks.0.proj"),
    ("__nncf_hooks.post_hooks.transformer_blocks:0:attn:to_q:weight__0.0", "transformer_blocks.0.attn.to_q"),
    ("__nncf_hooks.post_hooks.blocks:0:proj:weight__0", "blocks.0.proj"),
    ("encoder.__nncf_hooks.post_hooks.layers:1:fc:weight__0.0", "encoder.layers.1.fc"),
    ("__nncf_hooks.post_hooks.gate__0.0", ""),
    ("__nncf_hooks.post_hooks", None),
    ("__nncf_hooks", None),
    ("blocks.0.proj", None),
], ids=["decompressor", "deep-layer", "hook-dict", "storage-below-root", "root-tensor", "hooks-dict",
        "hook-storage", "not-a-hook"])
def test_an_nncf_decompressor_moves_with_the_layer_it_decompresses(path, owner):
    cls = get_engine_class("nncf")
    assert cls.offload_unit(path, nn.Module()) == owner
