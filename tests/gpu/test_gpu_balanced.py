"""Balanced offload on the GPU (`pytest -m gpu`): module devices during a run, peak memory under a cap,
quantized layers (torchao, SDNQ) never split from their scales, and a whole cell through the CLI.

Each check runs in a fresh Python process (`_in_child`): CUDA initialised in the pytest process would make
the harness's later in-process cells spawn instead of fork, and tests/gpu/test_gpu_cells.py checks that
the parent holds no CUDA context."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from harness import measure, offload
from harness.offload import balanced
from harness.offload.balanced import build_units
from tests.conftest import ROOT

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda:0")
GIB = 2**30


def _in_child(check: str, *args) -> None:
    code = f"import sys; from tests.gpu.test_gpu_balanced import {check}; {check}(*sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _tensors(t: torch.Tensor):
    """The tensors that really hold data: a subclass is unflattened (packed data, scales, ...)."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        for n in names:
            inner = getattr(t, n)
            if inner is not None:
                yield from _tensors(inner)
    else:
        yield t


def _devices(module: nn.Module) -> set[str]:
    out = set()
    for t in [*module.parameters(), *module.buffers()]:
        out.update(x.device.type for x in _tensors(t))
    return out


def _unit_devices(unit) -> set[str]:
    """Where a unit's own tensors are (a layer's children are units of their own unless it is quantized)."""
    return {x.device.type for t in unit.tensors() for x in _tensors(t)}


def _tiny_pipe(cache_dir):
    from harness import synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_module_devices_during_a_pipeline_run(cache_dir):
    _in_child("check_module_devices", cache_dir)


@torch.no_grad()
def check_module_devices(cache_dir):
    pipe = _tiny_pipe(cache_dir)
    transformer_bytes = sum(u.nbytes for u in build_units(pipe.transformer))
    # usable memory such that half the transformer fits under the high watermark
    report = offload.apply(pipe, "balanced", {"usable_gib": transformer_bytes / 0.7 / 2 / GIB,
                                              "low_watermark": 0.05, "max_fill": None,
                                              "eviction": "low_watermark"}, CUDA)
    assert report["mode"] == "balanced" and set(report["components"]) == {"transformer", "text_encoder",
                                                                          "text_encoder_2", "vae"}
    assert pipe._execution_device.type == "cuda"
    manager = pipe._balanced_offload
    # A tiny model: count the offloader's own bytes, not the allocator's (cuBLAS workspaces, latents, ...
    # would exceed the whole budget). tests/gpu checks the real accounting in check_peak_memory_under_cap.
    manager._memory_used = lambda: sum(c.bytes_on_device() for c in manager.components.values())
    units = manager.components["transformer"].units
    before = {u.name: _unit_devices(u) for u in units}
    assert all(d == {"cpu"} for d in before.values())  # nothing on the GPU before the first call

    during = []
    for unit in units:
        unit.roots[0].register_forward_pre_hook(lambda m, a, u=unit: during.append((u.name, _unit_devices(u))))
    text_encoder_during_transformer = []
    pipe.transformer.x_embedder.register_forward_pre_hook(
        lambda m, a: text_encoder_during_transformer.append(_devices(pipe.text_encoder)))
    pipe("a fox", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="pt")

    assert during and all(devs == {"cuda"} for _, devs in during), [d for d in during if d[1] != {"cuda"}][:5]
    stats = offload.stats(pipe)["components"]["transformer"]
    assert stats["streamed_units"] > 0 and stats["resident_units"] > 0
    # after the call the streamed layers are back on the CPU
    resident = {u.name for u in units if u.on_device}
    for unit in units:
        if unit.name not in resident:
            assert _unit_devices(unit) == {"cpu"}, unit.name
    # the transformer's dispatch sent the idle CLIP encoder back to the CPU (GPU use above the low watermark)
    assert text_encoder_during_transformer and text_encoder_during_transformer[0] == {"cpu"}


class Stack(nn.Module):
    def __init__(self, n=24, width=8192):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False, dtype=torch.bfloat16) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x) / 64
        return x


@pytest.mark.parametrize("max_fill, release_cache", [("0.85", "0"), ("0.95", "1")])
def test_peak_memory_stays_under_the_cap(max_fill, release_cache):
    _in_child("check_peak_memory_under_cap", max_fill, release_cache)


@torch.no_grad()
def check_peak_memory_under_cap(max_fill="0.85", release_cache="0"):
    torch.manual_seed(0)
    model = Stack()  # 24 x 128 MiB = 3 GiB
    x = torch.randn(16, 8192, dtype=torch.bfloat16)
    ref = model.to(CUDA)(x.to(CUDA)).cpu()
    model.to("cpu")
    torch.cuda.empty_cache()
    cap = 1.5 * GIB
    total = torch.cuda.get_device_properties(CUDA).total_memory
    torch.cuda.set_per_process_memory_fraction(cap / total, CUDA)
    try:
        usable = balanced.usable_bytes(CUDA)
        assert abs(usable - cap) < 2**20  # the cap is the usable memory
        manager = balanced.BalancedOffload(CUDA, usable, max_fill=float(max_fill),
                                           release_cache=release_cache == "1").install({"stack": model})
        probe = measure.MemoryProbe(CUDA)
        probe.reset_peak()
        out = model(x).cpu()
        out = model(x).cpu()
        peak = measure.peak_allocated(CUDA)  # the offloader restarts the allocator's peak at each dispatch
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
    torch.testing.assert_close(out, ref)
    assert peak < cap, f"peak {peak / GIB:.2f} GiB over the {cap / GIB} GiB cap"
    s = manager.stats()["components"]["stack"]
    # the second call promoted layers up to max_fill of the cap minus the measured working memory
    assert 0 < s["resident_gib"] <= float(max_fill) * cap / GIB and s["streamed_units"] > 0 and s["work_gib"] > 0
    # two calls: the layers still streamed were copied twice
    assert s["gib_to_device"] >= s["resident_gib"] + 2 * s["streamed_gib"] - 1e-6


def _quantized(engine, dtype):
    from engines.registry import get_engine_class

    torch.manual_seed(0)
    model = Stack(n=6, width=1024)
    eng = get_engine_class(engine)(dtype, "post", {"quantize_device": "cpu"} if engine == "sdnq" else {})
    eng.check_platform(CUDA)
    return eng.quantize("transformer", model) or model, eng


@pytest.mark.parametrize("engine, dtype", [("torchao", "int8"), ("sdnq", "int8"), ("sdnq", "uint4")])
def test_quantized_layers_are_never_split(engine, dtype):
    _in_child("check_quantized_never_split", engine, dtype)


@torch.no_grad()
def check_quantized_never_split(engine, dtype):
    model, eng = _quantized(engine, dtype)
    x = torch.randn(4, 1024, dtype=torch.bfloat16, device=CUDA)
    model.to(CUDA)
    ref = model(x)
    model.to("cpu")
    units = build_units(model, eng)
    assert all(u.subtree for u in units)  # one unit per quantized layer
    size = sum(u.nbytes for u in units)
    manager = balanced.BalancedOffload(CUDA, usable=int(size / 2 / 0.7), max_fill=None, engine=eng,
                                       memory_used=lambda: manager.components["m"].bytes_on_device())
    manager.install({"m": model})
    seen = []
    for unit in units:
        unit.roots[0].register_forward_pre_hook(lambda m, a: seen.append(_devices(m)))
    out = model(x)
    torch.testing.assert_close(out, ref)
    assert seen and all(devs == {"cuda"} for devs in seen)  # data and scales together, at every forward
    for unit in units:  # between forwards: wholly on the GPU (resident) or wholly on the CPU (streamed)
        assert _devices(unit.roots[0]) in ({"cuda"}, {"cpu"})
    s = manager.stats()["components"]["m"]
    assert s["resident_units"] > 0 and s["streamed_units"] > 0


def test_a_balanced_cell_reports_its_placement(cli, tmp_path):
    proc = cli("run.device=cuda", "engine=sdnq", "dtype=int8", "offload=balanced", "offload.options.usable_gib=0.001",
               "workload.height=64", "workload.width=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = next(json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
                  if "sdnq" in p.parent.name and "reference" not in str(p))
    assert record["status"] == "ok", record["error"]
    report = record["offload_report"]
    assert report["mode"] == "balanced" and report["moves"] > 0 and report["gib_moved"] > 0
    t = report["components"]["transformer"]
    assert t["quantized_units"] > 0 and t["dispatches"] >= 1 and t["streamed_units"] > 0
    assert record["quality"]["psnr_db"] is not None


@pytest.mark.parametrize("engine, dtype", [("torchao", "int8"), ("sdnq", "int8"), ("sdnq", "uint4")])
def test_a_component_bound_for_offload_is_quantized_on_the_gpu_and_handed_over_on_the_cpu(engine, dtype):
    _in_child("check_quantize_for_offload", engine, dtype)


@torch.no_grad()
def check_quantize_for_offload(engine, dtype):
    from engines.registry import get_engine_class
    from harness.load import quantize_for_offload

    torch.manual_seed(0)
    model = Stack(n=6, width=1024)
    copy = Stack(n=6, width=1024)
    copy.load_state_dict(model.state_dict())
    eng = get_engine_class(engine)(dtype, "post", {})
    assert eng.round_trips
    eng.check_platform(CUDA)
    quantized = quantize_for_offload(eng, "transformer", model, CUDA)
    assert _devices(quantized) == {"cpu"}
    assert eng.verify("transformer", quantized)
    x = torch.randn(4, 1024, dtype=torch.bfloat16, device=CUDA)
    on_gpu = (eng.quantize("transformer", copy.to(CUDA)) or copy)(x)
    torch.testing.assert_close(quantized.to(CUDA)(x), on_gpu, rtol=0, atol=0)


@pytest.mark.parametrize("engine, dtype, lands", [("sdnq", "int8", "cuda"), ("torchao", "int8", "cpu")])
def test_a_component_too_large_to_visit_the_gpu_whole_is_quantized_there_layer_by_layer(engine, dtype, lands):
    _in_child("check_quantize_onto", engine, dtype, lands)


@torch.no_grad()
def check_quantize_onto(engine, dtype, lands):
    from engines.registry import get_engine_class
    from harness.load import quantize_for_offload

    torch.manual_seed(0)
    model = Stack(n=24, width=4096)  # 24 x 32 MiB in BF16; int8: about half
    copy = Stack(n=24, width=4096)
    copy.load_state_dict(model.state_dict())
    eng = get_engine_class(engine)(dtype, "post", {})
    eng.check_platform(CUDA)
    x = torch.randn(4, 4096, dtype=torch.bfloat16, device=CUDA)
    on_gpu = (eng.quantize("transformer", copy.to(CUDA)) or copy)(x)
    del copy
    torch.cuda.empty_cache()
    cap = 768 * 2**20  # the BF16 stack does not fit; its int8 form with one layer's quantization work does
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(CUDA).total_memory, CUDA)
    torch.cuda.reset_peak_memory_stats(CUDA)
    quantized = quantize_for_offload(eng, "transformer", model, CUDA, resident_budget=cap)
    assert _devices(quantized) == {lands}
    assert torch.cuda.max_memory_allocated(CUDA) <= cap
    assert eng.verify("transformer", quantized)
    torch.cuda.set_per_process_memory_fraction(1.0, CUDA)  # the cap was for quantizing; moving back is not tested
    torch.testing.assert_close(quantized.to(CUDA)(x), on_gpu, rtol=0, atol=0)


def test_a_component_on_the_gpu_at_install_stays_until_evicted():
    _in_child("check_resident_start")


@torch.no_grad()
def check_resident_start():
    torch.manual_seed(0)
    model = Stack(n=4, width=1024).to(CUDA)
    x = torch.randn(4, 1024, dtype=torch.bfloat16, device=CUDA)
    ref = model(x)
    manager = balanced.BalancedOffload(CUDA, usable=8 * GIB).install({"m": model})
    assert _devices(model) == {"cuda"}
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    s = manager.stats()["components"]["m"]
    assert s["moves_to_device"] == 0 and s["streamed_units"] == 0 and s["resident_units"] == s["units"]
    before = torch.cuda.memory_allocated(CUDA)
    manager.evict("m")
    assert _devices(model) == {"cpu"}
    assert torch.cuda.memory_allocated(CUDA) <= before - 4 * 1024 * 1024 * 2  # the GPU copies are gone
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)  # dispatched again from its CPU copy
    assert manager.stats()["components"]["m"]["gib_to_host"] > 0


def test_restarting_the_peak_for_working_memory_keeps_the_runs_peak():
    _in_child("check_restart_peak")


def check_restart_peak():
    from harness import measure

    probe = measure.MemoryProbe(CUDA)
    probe.reset_peak()
    big = torch.empty(GIB, dtype=torch.uint8, device=CUDA)
    del big
    measure.restart_peak(CUDA)
    small = torch.empty(GIB // 8, dtype=torch.uint8, device=CUDA)
    assert torch.cuda.max_memory_allocated(CUDA) < GIB // 2  # the forward's own peak
    assert probe.peak()["peak_allocated_gib"] >= 1.0  # the run's peak survives the restart
    del small
    probe.reset_peak()
    assert probe.peak()["peak_allocated_gib"] < 0.5
