"""`harness.offload`: the mode registry and what each mode installs (CUDA only: offload is `Unsupported`
on a CPU-only run)."""
import pytest
import torch
from torch import nn

from engines.base import Unsupported
from harness import offload

CUDA = torch.device("cuda")  # only its type is looked at: nothing here initialises CUDA


@pytest.mark.parametrize("name", list(offload.MODES))
def test_every_registered_mode_resolves(name):
    assert callable(offload.mode_function(name))


@pytest.mark.parametrize("call", [
    lambda: offload.mode_function("balance"),
    lambda: offload.check("balance", CUDA),
    lambda: offload.apply(object(), "balance", {}, CUDA),
], ids=["mode_function", "check", "apply"])
def test_an_unknown_mode_names_the_valid_ones(call):
    with pytest.raises(ValueError, match=r"^Unknown offload mode 'balance'. Did you mean: balanced\? "
                                         r"Available: none, model, sequential, group, balanced$"):
        call()


@pytest.mark.parametrize("name", [m for m in offload.MODES if m != "none"])
def test_offload_is_unsupported_without_an_accelerator(name):
    with pytest.raises(Unsupported, match=f"offload={name} needs a CUDA accelerator"):
        offload.check(name, torch.device("cpu"))
    offload.check("none", torch.device("cpu"))


def test_balanced_is_unsupported_without_an_accelerator():
    with pytest.raises(Unsupported, match="offload=balanced needs a CUDA accelerator"):
        offload.check("balanced", torch.device("cpu"))


def test_stats_of_a_pipeline_without_balanced_offload_is_empty():
    class Pipe:
        pass

    assert offload.stats(Pipe()) == {}


class Pipe:
    """What the diffusers-backed modes touch of a pipeline."""

    def __init__(self):
        self.components = {"transformer": nn.Linear(2, 2), "vae": nn.Linear(2, 2), "scheduler": object()}
        self.calls = []

    def enable_model_cpu_offload(self, device):
        self.calls.append(("model", device))

    def enable_sequential_cpu_offload(self, device):
        self.calls.append(("sequential", device))


def test_none_installs_nothing_and_takes_no_options():
    assert offload.apply(Pipe(), "none", {}, torch.device("cpu")) == {"mode": "none"}
    with pytest.raises(ValueError, match="offload 'none' has no option 'x'"):
        offload.apply(Pipe(), "none", {"x": 1}, torch.device("cpu"))


@pytest.mark.parametrize("name, report", [("model", {"mode": "model", "unit": "component"}),
                                          ("sequential", {"mode": "sequential", "unit": "leaf module"})])
def test_model_and_sequential_are_diffusers_own(name, report):
    pipe = Pipe()
    assert offload.apply(pipe, name, {}, CUDA) == report
    assert pipe.calls == [(name, CUDA)]


@pytest.mark.parametrize("options, kwargs", [
    ({}, {"offload_type": "block_level", "use_stream": False, "num_blocks_per_group": 1}),
    ({"num_blocks_per_group": 3, "use_stream": True},
     {"offload_type": "block_level", "use_stream": True, "num_blocks_per_group": 3}),
    ({"offload_type": "leaf_level"}, {"offload_type": "leaf_level", "use_stream": False}),
], ids=["defaults", "blocks-and-stream", "leaf-level"])
def test_group_offloads_every_module_component(monkeypatch, options, kwargs):
    import diffusers.hooks

    seen = []
    monkeypatch.setattr(diffusers.hooks, "apply_group_offloading",
                        lambda module, onload_device, offload_device, **kw: seen.append((module, kw)))
    pipe = Pipe()
    assert offload.apply(pipe, "group", options, CUDA) == {"mode": "group", **kwargs}
    assert [m for m, _ in seen] == [pipe.components["transformer"], pipe.components["vae"]]
    assert all(kw == kwargs for _, kw in seen)


def test_the_engine_reaches_balanced_offload(monkeypatch):
    from harness.offload import balanced

    got = {}

    class Manager:
        def __init__(self, *args, engine=None, **kwargs):
            got["engine"] = engine

        def install(self, components):
            got["components"] = set(components)

        def report(self):
            return {"mode": "balanced"}

    monkeypatch.setattr(balanced, "BalancedOffload", Manager)
    monkeypatch.setattr(balanced, "usable_bytes", lambda device, gib: 2**30)
    engine = object()
    assert offload.apply(Pipe(), "balanced", {}, CUDA, engine=engine) == {"mode": "balanced"}
    assert got == {"engine": engine, "components": {"transformer", "vae"}}
