"""`harness.offload.balanced.manager`: dispatch, streaming, eviction, promotion and the books, with ``cpu``
standing in for the GPU and an injected memory-usage function; then a whole pipeline and a whole cell."""
import pytest
import torch
from torch import nn

from harness import offload
from harness.offload.balanced import placement
from harness.offload.balanced.manager import BalancedOffload
from harness.offload.balanced.placement import plan
from harness.offload.balanced.units import build_units
from tests.harness.offload.toys import Toy, quantized_toy, watch


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
    watch(manager, "transformer", log)

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
    model, eng = quantized_toy("sdnq", "int8")
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    ref = model(x)
    total = sum(u.nbytes for u in build_units(model, eng))
    manager = BalancedOffload("cpu", int(total * 0.4), high_watermark=1.0, engine=eng).install({"transformer": model})
    seen = []

    def check(mod, args):  # every tensor of a quantized layer is where its unit is
        for unit in manager.components["transformer"].units:
            if unit.subtree and mod in unit.roots:
                seen.append(unit.on_device)
    for m in model.modules():
        m.register_forward_pre_hook(check)
    assert torch.equal(model(x), ref)
    assert seen and all(seen)


def test_eviction_low_watermark_sends_idle_components_back_above_it():
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)

    # low watermark below what `a` holds: starting `b` sends `a` back to the CPU
    manager = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.1,
                              eviction="low_watermark")
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
    keep = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.3,
                           eviction="low_watermark").install({"a": a2, "b": b2})
    a2(x)
    b2(x)
    assert keep.components["a"].bytes_on_device() == size and keep.components["b"].bytes_on_device() == size
    assert keep.stats()["components"]["a"]["evictions"] == 0


def test_a_whole_component_is_not_replanned_until_it_is_evicted(monkeypatch):
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.1,
                              eviction="low_watermark")
    manager.install({"a": a, "b": b})
    calls = []
    monkeypatch.setattr(placement, "plan", lambda *args: calls.append(1) or plan(*args))
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
    monkeypatch.setattr(BalancedOffload, "release", lambda self: calls.append(self.used()))
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
    assert calls == [0] and plain.report()["release_cache"] is False


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


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="low_watermark <= high_watermark"):
        BalancedOffload("cpu", usable=100, high_watermark=0.2, low_watermark=0.5)
    with pytest.raises(ValueError, match="usable GPU memory must be positive"):
        BalancedOffload("cpu", usable=0)


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
    manager = BalancedOffload("cpu", usable=int(transformer / 0.7 / 2), high_watermark=0.7, low_watermark=0.2,
                              eviction="low_watermark")
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
record = runner.run(cell, sys.argv[2]).record
print("RECORD " + json.dumps({k: record[k] for k in ("status", "error", "offload_report", "quality")}))
"""


@pytest.mark.timeout(180)  # ~10 s idle (an sdnq cell in a subprocess): 3x that busy, with a margin
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


def test_eviction_as_needed_keeps_idle_components_that_fit_beside_the_dispatched_one():
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=4 * size, high_watermark=0.5, low_watermark=0.1)
    assert manager.eviction == "as_needed"  # the default
    manager.install({"a": a, "b": b})
    for _ in range(3):  # one "pipeline call" each: a, then b
        a(x)
        b(x)
    stats = manager.stats()["components"]
    for name in "ab":
        assert stats[name]["evictions"] == 0 and stats[name]["dispatches"] == 1
        assert stats[name]["moves_to_device"] == len(manager.components[name].units)  # each unit moved once
        assert manager.components[name].bytes_on_device() == size


def test_eviction_as_needed_evicts_once_streaming_has_cost_what_moving_the_idle_one_back_would():
    a, b = Toy(blocks=4), Toy(blocks=4)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    ref = b(x)
    manager = BalancedOffload("cpu", usable=int(1.5 * size), high_watermark=1.0, low_watermark=0.1, max_fill=None)
    manager.install({"a": a, "b": b})
    a(x)  # placed whole: a third of the device stays free
    assert torch.equal(b(x), ref)
    comp_a, comp_b = manager.components["a"], manager.components["b"]
    streamed = comp_b.nbytes - comp_b.bytes_on_device()
    assert comp_a.bytes_on_device() == size and 0 < streamed <= size  # b streams what does not fit beside a
    forwards = 1
    while comp_a.bytes_on_device():
        assert torch.equal(b(x), ref)
        forwards += 1
        assert forwards <= size // streamed + 2
    # `a` left at the first forward whose streamed bytes so far reached its size; b was promoted whole
    assert (forwards - 1) * streamed >= size > (forwards - 2) * streamed
    assert comp_b.whole and comp_b.bytes_on_device() == size
    s = manager.stats()["components"]
    assert s["a"]["evictions"] == 1 and s["b"]["evictions"] == 0 and s["b"]["promotions"] > 0


def test_eviction_as_needed_makes_room_when_the_dispatched_component_cannot_run_beside_the_others():
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=size, high_watermark=1.0, low_watermark=0.1, max_fill=None)
    manager.install({"a": a, "b": b})
    a(x)
    b(x)  # `a` fills the device: not even one layer of `b` would fit beside it
    assert manager.stats()["components"]["a"]["evictions"] == 1
    assert manager.components["b"].bytes_on_device() == size


def test_only_layers_that_move_again_are_pinned(monkeypatch):
    from harness.offload.balanced import manager as manager_module

    pinned = []
    monkeypatch.setattr(manager_module, "pin", lambda unit: pinned.append(unit.name))
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    model = Toy(blocks=4)
    total = sum(u.nbytes for u in build_units(model))
    roomy = BalancedOffload("cpu", int(total * 20), high_watermark=0.9, low_watermark=0.1)
    roomy.install({"transformer": model})
    roomy.pin_memory = True  # a CUDA device would have it on; cpu stands in
    model(x)
    model(x)
    assert pinned == []  # placed whole and kept: nothing is pinned

    model = Toy(blocks=4)
    tight = BalancedOffload("cpu", int(total * 0.5), high_watermark=0.9, low_watermark=0.1, max_fill=None)
    tight.install({"transformer": model})
    tight.pin_memory = True
    model(x)
    model(x)
    comp = tight.components["transformer"]
    streamed = {u.name for u in comp.units if not u.on_device}
    assert streamed and set(pinned) == streamed  # the streamed layers (`pin` acts once per unit)

    pinned.clear()
    a, b = Toy(blocks=2), Toy(blocks=2)
    size = sum(u.nbytes for u in build_units(a))
    pair = BalancedOffload("cpu", size, high_watermark=1.0, low_watermark=0.1, max_fill=None)
    pair.install({"a": a, "b": b})
    pair.pin_memory = True
    a(x[:, :32])
    b(x[:, :32])  # evicts `a`: its layers are pinned, since they will move again
    assert set(pinned) == {u.name for u in pair.components["a"].units}


def test_room_leaves_every_placed_components_working_memory_once_known():
    a, b = Toy(blocks=2), Toy(blocks=4)
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    size_b = sum(u.nbytes for u in build_units(b))
    usable = 4 * size_b
    manager = BalancedOffload("cpu", usable, high_watermark=0.5, low_watermark=0.1, max_fill=0.9)
    manager.install({"a": a, "b": b})
    ca, cb = manager.components["a"], manager.components["b"]
    a(x)
    b(x)
    used = manager.used()
    assert manager.room(cb) == int(0.5 * usable) - used  # no working memory known: the high watermark
    ca.work = usable // 10  # `a`'s activations are known, `b`'s not: `b` leaves them their room
    assert manager.room(cb) == min(int(0.5 * usable) - used, int(0.9 * usable) - usable // 10 - used)
    cb.work = usable // 20  # both known: max_fill minus the larger of the two
    assert manager.room(cb) == int(0.9 * usable) - usable // 10 - used
    ca.work = usable // 2
    assert manager.room(cb) == int(0.9 * usable) - usable // 2 - used  # smaller than the high watermark's


def test_a_forward_without_an_end_hook_is_measured_at_the_next_dispatch():
    """``vae.decode`` reaches the component hook's pre_forward only; its working memory is closed when the
    next component is dispatched."""
    vae, te = Toy(blocks=1), Toy(blocks=1)
    state = {"peak": 0}
    manager = BalancedOffload("cpu", 10**9, memory_used=lambda: 100, memory_peak=lambda: state["peak"])
    manager.install({"vae": vae, "text_encoder": te})
    manager.activate("vae")  # as diffusers' apply_forward_hook does: no finished("vae")
    state["peak"] = 100 + 4096  # the decode's activations
    assert manager.components["vae"].work is None
    manager.activate("text_encoder")
    assert manager.components["vae"].work == 4096


def test_a_decode_is_measured_when_it_returns():
    """The entry guard ends ``decode``'s forward when it returns, before the run can reset its peak."""
    class Vae(Toy):
        def decode(self, x):
            self._hf_hook.pre_forward(self)  # as diffusers' apply_forward_hook does
            state["peak"] = 100 + 4096  # the decode's activations
            return x

    vae = Vae(blocks=1)
    state = {"peak": 0}
    manager = BalancedOffload("cpu", 10**9, memory_used=lambda: 100, memory_peak=lambda: state["peak"])
    manager.install({"vae": vae})
    vae.decode(torch.zeros(1, 32, dtype=torch.bfloat16))
    assert manager.components["vae"].work == 4096 and manager.components["vae"].at_start is None


def test_eviction_as_needed_evicts_up_front_what_streaming_evicted_at_the_last_dispatch():
    a, b = Toy(blocks=4), Toy(blocks=4)
    size = sum(u.nbytes for u in build_units(a))
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=int(1.5 * size), high_watermark=1.0, low_watermark=0.1, max_fill=None)
    manager.install({"a": a, "b": b})
    comp_a, comp_b = manager.components["a"], manager.components["b"]
    a(x)
    while comp_a.bytes_on_device():  # b streams until its rent sends `a` back
        b(x)
    assert comp_b.rent_evicted == ["a"]
    a(x)  # `a` comes back beside a whole `b`, streaming what does not fit ...
    manager.evict("b")  # ... and b is sent back (as another component's dispatch might)
    before = manager.stats()["components"]["b"]["gib_to_device"]
    b(x)  # its next dispatch evicts `a` at once instead of streaming first
    assert comp_a.bytes_on_device() == 0 and comp_b.whole
    assert manager.stats()["components"]["b"]["gib_to_device"] - before == pytest.approx(size / 2**30)


@pytest.mark.parametrize("fraction", [0.35, 0.6, 1.6])
def test_flux_pipeline_output_is_unchanged_under_eviction_as_needed(cache_dir, fraction):
    from harness import synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=64, width=64, num_inference_steps=3, max_sequence_length=32, output_type="pt")

    def run():
        return pipe("a red fox", generator=torch.Generator().manual_seed(0), **kwargs).images

    ref = run()
    modules = {n: m for n, m in pipe.components.items() if isinstance(m, nn.Module)}
    total = sum(u.nbytes for m in modules.values() for u in build_units(m))
    manager = BalancedOffload("cpu", usable=int(total * fraction), high_watermark=0.7, low_watermark=0.2)
    manager.install(modules)
    pipe._balanced_offload = manager
    for _ in range(3):
        assert torch.equal(run(), ref)
    comps = offload.stats(pipe)["components"]
    assert all(c["dispatches"] >= 1 for c in comps.values())
    resident = sum(c.bytes_on_device() for c in manager.components.values())
    assert resident <= 0.7 * manager.usable or all(c["work_gib"] is not None for c in comps.values())
    if fraction * 0.7 > 1:  # everything fits under the high watermark: nothing is evicted
        assert sum(c["evictions"] for c in comps.values()) == 0


def test_a_working_memory_measurement_spanning_a_reset_of_the_runs_peak_is_void():
    """The cell resets the peak between warm-up and timed calls; a forward closed across it (``vae.decode``,
    closed at the next dispatch) would read a peak from after the reset, so its figure is dropped."""
    from harness.measure import MemoryProbe

    vae, te = Toy(blocks=1), Toy(blocks=1)
    state = {"peak": 100 + 4096}
    manager = BalancedOffload("cpu", 10**9, memory_used=lambda: 100, memory_peak=lambda: state["peak"])
    manager.install({"vae": vae, "text_encoder": te})
    manager.activate("vae")
    MemoryProbe(torch.device("cpu")).reset_peak()  # what the cell does after its warm-up
    state["peak"] = 100
    manager.activate("text_encoder")
    assert manager.components["vae"].work is None  # unknown, not 0: room() keeps the high watermark's margin


class Hungry(Toy):
    """A Toy whose forward and ``decode`` run out of device memory while another component holds bytes
    on the device (a stand-in for a video VAE's first decode under a cap)."""

    def __init__(self, manager_box, **kw):
        super().__init__(**kw)
        self.box, self.attempts = manager_box, 0

    def _check(self):
        self.attempts += 1
        others = [c for n, c in self.box[0].components.items() if n != "vae" and c.bytes_on_device()]
        if others:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")

    def forward(self, x):
        self._check()
        return super().forward(x)

    def decode(self, x):
        if hasattr(self, "_hf_hook"):
            self._hf_hook.pre_forward(self)  # as diffusers' apply_forward_hook does
        self._check()
        return super().forward(x)


@pytest.mark.parametrize("entry", ["forward", "decode"])
def test_an_out_of_memory_entry_evicts_idle_components_and_runs_once_more(entry):
    box = []
    a, vae = Toy(blocks=2), Hungry(box, blocks=2)
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    ref = Toy(blocks=2).forward(x)  # same seed, same weights
    size = sum(u.nbytes for u in build_units(a))
    manager = BalancedOffload("cpu", usable=8 * size)
    box.append(manager)
    manager.install({"transformer": a, "vae": vae})
    a(x)
    assert manager.components["transformer"].bytes_on_device() == size  # placed, idle from now on
    out = vae(x) if entry == "forward" else vae.decode(x)
    assert torch.equal(out, ref) and vae.attempts == 2
    s = manager.stats()["components"]
    assert s["vae"]["oom_retries"] == 1 and s["transformer"]["evictions"] == 1
    assert manager.components["transformer"].bytes_on_device() == 0
    vae.attempts = 0
    assert torch.equal(vae.decode(x), ref) and vae.attempts == 1  # nothing idle on the device: one attempt
    manager.remove()
    assert "decode" not in vars(vae) and vae.forward.__name__ == "forward"  # no guard left


def test_an_out_of_memory_error_with_nothing_idle_to_evict_is_the_runs():
    box = []
    vae, a = Hungry(box, blocks=2), Toy(blocks=2)
    x = torch.randn(1, 32, dtype=torch.bfloat16)
    manager = BalancedOffload("cpu", usable=10**9)
    box.append(manager)
    manager.install({"vae": vae, "transformer": a})
    a(x)
    manager.components["transformer"].placed = False  # holds bytes but is not idle-placed: nothing to evict
    with pytest.raises(torch.OutOfMemoryError):
        vae(x)
    assert vae.attempts == 1 and manager.stats()["components"]["vae"]["oom_retries"] == 0
