"""Small models and checks shared by the balanced offload tests (``cpu`` stands in for the GPU)."""
import pytest
import torch
from torch import nn

from engines.base import Unsupported
from harness.offload.balanced.manager import BalancedOffload
from harness.offload.balanced.units import build_units


class Block(nn.Module):
    """A module that owns a parameter directly *and* has children (the unit is its own tensor)."""

    def __init__(self, width=32):
        super().__init__()
        self.gate = nn.Parameter(torch.ones(width, dtype=torch.bfloat16))
        self.proj = nn.Linear(width, width, dtype=torch.bfloat16)
        self.norm = nn.LayerNorm(width, dtype=torch.bfloat16)
        self.act = nn.GELU()  # no tensors: not a unit

    def forward(self, x):
        return self.norm(self.proj(x) * self.gate) + x


class Toy(nn.Module):
    def __init__(self, blocks=4, width=32):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(width, width, dtype=torch.bfloat16)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.out = nn.Linear(width, width, dtype=torch.bfloat16)

    def forward(self, x):
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.out(x)


def engine(name: str, dtype: str):
    """An engine instance that runs here, or the test is skipped."""
    from engines.registry import get_engine_class

    eng = get_engine_class(name)(dtype, "post", {})
    try:
        eng.check_platform(torch.device("cpu"))
    except Unsupported as exc:
        pytest.skip(str(exc))
    return eng


def quantized_toy(name: str, dtype: str):
    """(a Toy quantized by engine ``name``, that engine)."""
    eng = engine(name, dtype)
    model = Toy(blocks=2, width=64)
    return eng.quantize("transformer", model) or model, eng


QUANTIZED = [("sdnq", "int8"), ("sdnq", "uint4"), ("torchao", "int8"), ("quanto", "int8"), ("quanto", "int4"),
             ("gguf", "q8_0"), ("bnb", "int8")]
QUANTIZED_IDS = [f"{e}-{d}" for e, d in QUANTIZED]


def watch(manager: BalancedOffload, comp: str, log: list):
    """Record, at every unit's forward, whether the offloader has it on the device."""
    for unit in manager.components[comp].units:
        for m in unit.roots:
            # registered after install: runs after the offloader's own pre-hook
            m.register_forward_pre_hook(lambda mod, args, unit=unit: log.append((unit.name, unit.on_device)),
                                        prepend=False)


def assert_offloaded_output_matches(model, x, fraction=0.5, engine=None):
    ref = model(x)
    total = sum(u.nbytes for u in build_units(model, engine))
    manager = BalancedOffload("cpu", usable=int(total * fraction / 0.7), high_watermark=0.7,
                              engine=engine).install({"m": model})
    for _ in range(2):
        assert torch.equal(model(x), ref)
    stats = manager.stats()["components"]["m"]
    assert stats["streamed_units"] > 0 and stats["resident_units"] > 0
    manager.remove()
    assert torch.equal(model(x), ref)
