"""Balanced offload on the CPU: the planning functions, the units (quantized layers whole), and the
hook mechanics with ``cpu`` standing in for the GPU and an injected memory-usage function."""
import pytest
import torch
from torch import nn

from engines.base import Unsupported, module_nbytes
from harness import balanced, offload
from harness.balanced import BalancedOffload, build_units, evictions, plan


@pytest.fixture(autouse=True)
def _inference():
    """As in a pipeline call: no autograd graph (it would hold references to quantized weights). And one
    intra-op thread: OpenMP workers started in the pytest process would hang the cells that later tests
    fork from it (libgomp is not fork-safe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


# -- plan / evictions (pure) ----------------------------------------------------------------------
@pytest.mark.parametrize("sizes, budget, expected", [
    ([4, 4, 4], 12, [True, True, True]),                   # everything fits
    ([4, 4, 4], 8, [True, True, False]),                   # in order until the budget is spent
    ([4, 9, 2, 1], 7, [True, False, True, True]),          # a unit too large is skipped, small ones still fill
    ([5, 5], 0, [False, False]),                           # no room: all streamed
    ([5, 5], -3, [False, False]),                          # over the watermark already
    ([], 10, []),
], ids=["all-fit", "in-order", "first-fit", "zero-budget", "negative-budget", "empty"])
def test_plan_is_first_fit_in_order(sizes, budget, expected):
    assert plan(sizes, budget) == expected


def test_plan_places_required_units_first_and_charges_them():
    assert plan([3, 6, 3], 6, required=[False, True, False]) == [False, True, False]
    assert plan([3, 6, 3], 9, required=[False, True, False]) == [True, True, False]
    assert plan([3, 6], 2, required=[False, True]) == [False, True]  # required even over budget


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        plan([1, 2], 5, required=[True])
    with pytest.raises(ValueError, match=">= 0"):
        plan([1, -2], 5)


def test_evictions_lru_first_until_below_low_watermark():
    placed = [("text_encoder", 2), ("text_encoder_2", 9), ("vae", 1)]
    assert evictions(placed, used=12, low=3) == ["text_encoder", "text_encoder_2"]
    assert evictions(placed, used=12, low=12) == []
    assert evictions(placed, used=12, low=0) == ["text_encoder", "text_encoder_2", "vae"]


# -- units ----------------------------------------------------------------------------------------
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


def _quantized_toy(engine: str, dtype: str) -> nn.Module:
    from engines.registry import get_engine_class

    eng = get_engine_class(engine)(dtype, "post", {})
    try:
        eng.check_platform(torch.device("cpu"))
    except Unsupported as exc:
        pytest.skip(str(exc))
    model = Toy(blocks=2, width=64)
    return eng.quantize("transformer", model) or model


QUANTIZED = [("sdnq", "int8"), ("sdnq", "uint4"), ("torchao", "int8"), ("quanto", "int8"), ("quanto", "int4"),
             ("gguf", "q8_0"), ("bnb", "int8")]


@pytest.mark.parametrize("engine, dtype", QUANTIZED, ids=[f"{e}-{d}" for e, d in QUANTIZED])
def test_quantized_layers_are_atomic_with_their_scales(engine, dtype):
    model = _quantized_toy(engine, dtype)
    units = {u.name: u for u in build_units(model)}
    for name in ("embed", "blocks.0.proj", "out"):
        unit = units[name]
        layer = model.get_submodule(name)
        assert unit.subtree and unit.roots == [layer]
        # every byte of the layer (packed data, scales, zero points, bias) moves as one
        assert unit.nbytes == module_nbytes(layer) > 0
        assert not any(n.startswith(name + ".") for n in units)  # nothing inside it is a unit of its own
    assert units["blocks.0.norm"].subtree is False
    assert sum(u.nbytes for u in units.values()) == module_nbytes(model)
    _assert_offloaded_output_matches(model, torch.randn(2, 64, dtype=torch.bfloat16))


def test_nncf_decompressor_moves_with_its_layer():
    nncf = pytest.importorskip("nncf")
    model = Toy(blocks=1, width=64)
    nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM,
                          dataset=nncf.Dataset([torch.randn(1, 64, dtype=torch.bfloat16)]))
    units = {u.name: u for u in build_units(model)}
    proj = units["blocks.0.proj"]
    kinds = [type(m).__name__ for m in proj.roots]
    assert kinds[0] == "Linear" and len(kinds) == 2 and "Decompressor" in kinds[1]
    assert proj.nbytes == module_nbytes(model.blocks[0].proj) + module_nbytes(proj.roots[1])
    assert not any(n.startswith("<nncf>") for n in units)  # no orphan decompressor
    _assert_offloaded_output_matches(model, torch.randn(2, 64, dtype=torch.bfloat16))


def test_peft_lora_around_a_quantized_layer_is_one_unit():
    peft = pytest.importorskip("peft")
    model = _quantized_toy("sdnq", "int8")
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["proj"]), model)
    units = {u.name: u for u in build_units(model)}
    wrapper = model.blocks[0].proj
    assert units["blocks.0.proj"].roots == [wrapper] and units["blocks.0.proj"].subtree
    assert units["blocks.0.proj"].nbytes == module_nbytes(wrapper)


# -- mechanics (cpu as the stand-in device) -------------------------------------------------------
def _watch(manager: BalancedOffload, comp: str, log: list):
    """Record, at every unit's forward, whether the offloader has it on the device."""
    for unit in manager.components[comp].units:
        for m in unit.roots:
            # registered after install: runs after the offloader's own pre-hook
            m.register_forward_pre_hook(lambda mod, args, unit=unit: log.append((unit.name, unit.on_device)),
                                        prepend=False)


def _assert_offloaded_output_matches(model, x, fraction=0.5):
    ref = model(x)
    total = sum(u.nbytes for u in build_units(model))
    manager = BalancedOffload("cpu", usable=int(total * fraction / 0.7), high_watermark=0.7).install({"m": model})
    for _ in range(2):
        assert torch.equal(model(x), ref)
    stats = manager.stats()["components"]["m"]
    assert stats["streamed_units"] > 0 and stats["resident_units"] > 0
    manager.remove()
    assert torch.equal(model(x), ref)


def test_partial_placement_under_the_high_watermark_and_streaming_the_rest():
    model = Toy(blocks=4)
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    ref = model(x)
    units = build_units(model)
    total = sum(u.nbytes for u in units)
    usable = total  # high watermark 0.5: half the component fits
    manager = BalancedOffload("cpu", usable, high_watermark=0.5, low_watermark=0.1).install({"transformer": model})
    comp = manager.components["transformer"]
    assert all(not u.on_device for u in comp.units)  # nothing on the device before the first forward
    log = []
    _watch(manager, "transformer", log)

    for _ in range(3):
        assert torch.equal(model(x), ref)

    resident = [u for u in comp.units if u.on_device]
    streamed = [u for u in comp.units if not u.on_device]
    assert resident and streamed
    assert sum(u.nbytes for u in resident) <= 0.5 * usable
    # first fit in module order: the resident units are the ones plan() picks
    assert [u.on_device for u in comp.units] == plan([u.nbytes for u in comp.units], int(0.5 * usable))
    # every unit was on the device when its forward ran; streamed ones left again afterwards
    assert log and all(on for _, on in log)
    assert {name for name, _ in log} == {u.name for u in comp.units}

    s = manager.stats()["components"]["transformer"]
    streamed_bytes = sum(u.nbytes for u in streamed)
    assert s["resident_units"] == len(resident) and s["streamed_units"] == len(streamed)
    assert s["resident_gib"] * 2**30 == pytest.approx(sum(u.nbytes for u in resident))
    assert s["streamed_gib"] * 2**30 == pytest.approx(streamed_bytes)
    assert s["dispatches"] == 1 and s["evictions"] == 0
    # resident moved once; each streamed unit onto the device (and dropped) at every forward
    assert s["moves_to_device"] == len(resident) + 3 * len(streamed)
    assert s["moves_to_host"] == 3 * len(streamed)
    assert s["gib_to_device"] * 2**30 == pytest.approx(sum(u.nbytes for u in resident) + 3 * streamed_bytes)
    assert s["gib_to_host"] == 0  # plain tensors: the CPU copy is kept, nothing is copied back


def test_quantized_units_are_never_split_while_streamed():
    model = _quantized_toy("sdnq", "int8")
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    ref = model(x)
    total = sum(u.nbytes for u in build_units(model))
    manager = BalancedOffload("cpu", int(total * 0.4), high_watermark=1.0).install({"transformer": model})
    seen = []

    def check(mod, args):  # every tensor of a quantized layer is where its unit is
        for unit in manager.components["transformer"].units:
            if unit.subtree and mod in unit.roots:
                seen.append(unit.on_device)
    for m in model.modules():
        m.register_forward_pre_hook(check)
    assert torch.equal(model(x), ref)
    assert seen and all(seen)


def test_idle_components_are_evicted_only_above_the_low_watermark():
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)

    # low watermark below what `a` holds: starting `b` sends `a` back to the CPU
    manager = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.1)
    manager.install({"a": a, "b": b})
    a(x)
    assert manager.components["a"].bytes_on_device() == size
    b(x)
    assert manager.components["a"].bytes_on_device() == 0 and manager.components["b"].bytes_on_device() == size
    stats = manager.stats()["components"]
    assert stats["a"]["evictions"] == 1 and stats["a"]["moves_to_host"] == len(manager.components["a"].units)
    a(x)
    assert manager.stats()["components"]["a"]["dispatches"] == 2

    # low watermark above it: `a` stays while `b` runs
    a2, b2 = Toy(blocks=2), Toy(blocks=2)
    keep = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.3).install({"a": a2, "b": b2})
    a2(x)
    b2(x)
    assert keep.components["a"].bytes_on_device() == size and keep.components["b"].bytes_on_device() == size
    assert keep.stats()["components"]["a"]["evictions"] == 0


def test_a_whole_component_is_not_replanned_until_it_is_evicted(monkeypatch):
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.1)
    manager.install({"a": a, "b": b})
    calls = []
    monkeypatch.setattr(balanced, "plan", lambda *args: calls.append(1) or plan(*args))
    a(x)
    a(x)
    assert len(calls) == 1  # placed whole at the first forward; the second has nothing to place
    b(x)  # evicts `a`
    a(x)
    assert len(calls) == 3 and manager.components["a"].bytes_on_device() == size  # placed again after eviction


def test_injected_memory_use_shrinks_the_budget_and_freed_memory_promotes_layers():
    model = Toy(blocks=4)
    total = sum(u.nbytes for u in build_units(model))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    other = {"bytes": total // 2}  # something else holds half of the device at first
    manager = BalancedOffload("cpu", usable=total, high_watermark=1.0, low_watermark=0.1,
                              memory_used=lambda: other["bytes"] + manager.components["m"].bytes_on_device())
    manager.install({"m": model})
    model(x)
    first = manager.stats()["components"]["m"]
    assert 0 < first["resident_gib"] * 2**30 <= total // 2 and first["streamed_units"] > 0
    other["bytes"] = 0
    model(x)
    again = manager.stats()["components"]["m"]
    assert again["streamed_units"] == 0 and again["promotions"] == first["streamed_units"]
    assert again["dispatches"] == 1 and again["max_resident_gib"] * 2**30 == total


def test_measured_working_memory_lets_a_fitting_component_go_whole_above_the_high_watermark():
    model = Toy(blocks=4)
    total = sum(u.nbytes for u in build_units(model))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    work = total // 10  # activations of one forward, as the injected allocator peak reports them
    state = {"peak": 0}

    def used():
        return manager.components["m"].bytes_on_device()

    def peak():  # the allocator's peak: at least what is in use now plus one forward's working memory
        state["peak"] = max(state["peak"], used() + work)
        return state["peak"]

    usable = int(total * 1.25)  # the whole model fits next to its working memory, not under high=0.5
    manager = BalancedOffload("cpu", usable=usable, high_watermark=0.5, low_watermark=0.1, memory_used=used,
                              memory_peak=peak, max_fill=0.95)
    manager.install({"m": model})
    model(x)
    first = manager.stats()["components"]["m"]
    assert first["streamed_units"] > 0 and first["resident_gib"] * 2**30 <= 0.5 * usable
    assert first["work_gib"] is not None
    model(x)
    again = manager.stats()["components"]["m"]
    assert again["streamed_units"] == 0 and again["promotions"] == first["streamed_units"]
    assert used() + work <= 0.95 * usable

    # max_fill null: SD.Next's behaviour, never above the high watermark
    model2 = Toy(blocks=4)
    state["peak"] = 0
    capped = BalancedOffload("cpu", usable=usable, high_watermark=0.5, low_watermark=0.1, max_fill=None,
                             memory_used=lambda: capped.components["m"].bytes_on_device(), memory_peak=peak)
    capped.install({"m": model2})
    model2(x)
    model2(x)
    assert capped.stats()["components"]["m"]["streamed_units"] > 0
    with pytest.raises(ValueError, match="max_fill"):
        BalancedOffload("cpu", usable=10, max_fill=1.5)


def test_release_cache_runs_before_layers_are_placed_only(monkeypatch):
    calls = []
    monkeypatch.setattr(BalancedOffload, "_release", lambda self: calls.append(self.used()))
    model = Toy(blocks=2)
    total = sum(u.nbytes for u in build_units(model))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=4 * total, release_cache=True).install({"m": model})
    model(x)
    assert calls == [0]  # once, before the first placement, with nothing on the device yet
    model(x)
    assert calls == [0]  # everything resident: nothing to place, no release
    plain = BalancedOffload("cpu", usable=4 * total, release_cache=False).install({"m": Toy(blocks=2)})
    plain.components["m"].module(x)
    assert calls == [0] and plain.describe()["release_cache"] is False


def test_remove_restores_plain_modules():
    model = Toy(blocks=2)
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    ref = model(x)
    manager = BalancedOffload("cpu", usable=10).install({"m": model})
    assert hasattr(model, "_hf_hook")
    manager.remove()
    assert not hasattr(model, "_hf_hook")
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert torch.equal(model(x), ref)


def test_flux_pipeline_output_is_unchanged_and_every_component_is_dispatched(cache_dir):
    from harness import synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="pt")

    def run():
        return pipe("a red fox", generator=torch.Generator().manual_seed(0), **kwargs).images

    ref = run()
    modules = {n: m for n, m in pipe.components.items() if isinstance(m, nn.Module)}
    transformer = sum(u.nbytes for u in build_units(pipe.transformer))
    # the transformer only half fits under the high watermark
    manager = BalancedOffload("cpu", usable=int(transformer / 0.7 / 2), high_watermark=0.7, low_watermark=0.2)
    manager.install(modules)
    pipe._balanced_offload = manager
    assert torch.equal(run(), ref)
    assert torch.equal(run(), ref)

    report = offload.stats(pipe)
    comps = report["components"]
    assert set(comps) == set(modules)
    # vae.decode (not forward) dispatches the VAE through the component hook
    assert all(c["dispatches"] == 2 for c in comps.values())
    t = comps["transformer"]
    assert t["streamed_units"] > 0 and t["resident_gib"] > 0
    assert t["resident_gib"] * 2**30 <= 0.7 * manager.usable
    assert comps["text_encoder"]["evictions"] == 2  # the transformer's dispatch sent the encoders back
    assert report["moves"] == sum(c["moves_to_device"] + c["moves_to_host"] for c in comps.values())
    assert report["gib_moved"] == pytest.approx(sum(c["gib_to_device"] + c["gib_to_host"] for c in comps.values()))


# -- the offload mode -----------------------------------------------------------------------------
def test_balanced_is_unsupported_without_an_accelerator():
    with pytest.raises(Unsupported, match="offload=balanced needs a CUDA accelerator"):
        offload.check("balanced", torch.device("cpu"))


def test_options_are_checked():
    assert balanced.check_options({"high_watermark": 0.8}) == {**balanced.DEFAULT_OPTIONS, "high_watermark": 0.8}
    with pytest.raises(ValueError, match="no option high_watermrk.*options: high_watermark, low_watermark"):
        balanced.check_options({"high_watermrk": 0.8})
    with pytest.raises(ValueError, match="low_watermark <= high_watermark"):
        BalancedOffload("cpu", usable=100, high_watermark=0.2, low_watermark=0.5)


def test_stats_of_a_pipeline_without_balanced_offload_is_empty():
    class Pipe:
        pass

    assert offload.stats(Pipe()) == {}


def test_config_lists_every_option_with_its_default(compose):
    from harness.validate import validate

    cfg = compose(["offload=balanced"])
    assert dict(cfg.offload.options) == balanced.DEFAULT_OPTIONS
    assert validate(cfg).offload["name"] == "balanced"


_CELL = """
import json, sys
from harness import offload, runner
from harness.app import register
from hydra import compose, initialize_config_dir
from harness.validate import validate

offload.check = lambda name, device: None  # lifted for this run only (the forked cell inherits it)
register()
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cell = validate(compose(config_name="config", overrides=sys.argv[3:]))
record = runner.run(cell, sys.argv[2])
print("RECORD " + json.dumps({k: record[k] for k in ("status", "error", "offload_report", "quality")}))
"""


def test_a_cell_records_placement_and_traffic(cache_dir, store_path, tmp_path):
    """The whole cell path (fork, load, offload, generate, record) with the CPU standing in for the GPU:
    offload.check is lifted and the usable memory given in the config. In a fresh process: a cell is
    forked, and this test process has run torch ops (fork-unsafe thread pools)."""
    import json
    import subprocess
    import sys

    from tests.conftest import CONF

    overrides = [f"run.cache_dir={cache_dir}", f"run.store={store_path}", "run.device=cpu", "engine=sdnq",
                 "dtype=int8", "offload=balanced", "offload.options.usable_gib=0.0005", "workload.height=64",
                 "workload.width=64", "workload.steps=2", "metrics.save_images=false"]
    proc = subprocess.run([sys.executable, "-c", _CELL, str(CONF), str(tmp_path / "run"), *overrides],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.split("RECORD ", 1)[1])
    assert record["status"] == "ok", record["error"]
    report = record["offload_report"]
    assert report["mode"] == "balanced" and report["high_watermark"] == 0.7
    assert report["usable_gib"] == pytest.approx(0.0005, rel=1e-4)
    t = report["components"]["transformer"]
    assert t["quantized_units"] > 0 and t["resident_units"] > 0 and t["streamed_units"] > 0
    assert t["dispatches"] == 2  # warm-up call + timed call
    assert report["moves"] > 0 and report["gib_moved"] > 0
    assert record["quality"]["psnr_db"] > 30  # same numbers as without offload: compared with BF16
