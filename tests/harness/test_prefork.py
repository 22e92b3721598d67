"""The parent's warm imports: what a cell needs, without a CUDA context, device queries from NVML."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from harness import prefork


def test_warm_imports_the_cells_engine_and_pipeline_class_without_a_cuda_context():
    code = (
        "import sys, types\n"
        "from harness import prefork\n"
        "spec = types.SimpleNamespace(engine='sdnq', model={'family': 'flux-kontext', 'pipeline': 'FluxKontextPipeline'})\n"
        "out = prefork.warm(spec, 'cuda')\n"
        "import torch\n"
        "print(out['failed'], out['cuda_initialised'], torch.cuda.is_initialized(),"
        " 'diffusers.pipelines.flux.pipeline_flux_kontext' in sys.modules, 'engines.sdnq.engine' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["{}", "False", "False", "True", "True"], out.stderr[-3000:]


def test_a_failing_import_is_reported_not_raised(monkeypatch):
    spec = types.SimpleNamespace(engine="no-such-engine", model={"family": "no-such-family"})
    out = prefork.warm(spec, "cpu")
    assert set(out["failed"]) == {"no-such-engine", "pipeline:no-such-family"}
    assert out["cuda_initialised"] is False


class _FakeNvml(types.ModuleType):
    """pynvml for a host of two GPUs: index 0 is sm 9.0, index 1 (UUID GPU-b) sm 8.0."""

    def __init__(self):
        super().__init__("pynvml")
        self.handles = {0: ("H200", (9, 0)), 1: ("A100", (8, 0))}

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.handles[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.handles[{"GPU-a": 0, "GPU-b": 1}[uuid]]

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return handle[1]

    def nvmlDeviceGetName(self, handle):
        return handle[0].encode()

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(total=141 * 2**30)

    def nvmlDeviceGetCount(self):
        return 2


@pytest.mark.parametrize("visible, expected", [(None, ((9, 0), "H200")), ("1", ((8, 0), "A100")),
                                               ("GPU-b,GPU-a", ((8, 0), "A100"))])
def test_device_queries_answer_from_nvml_inside_the_block_only(monkeypatch, visible, expected):
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    from torch._dynamo import device_interface as di

    names = ("get_device_capability", "get_device_name", "get_device_properties", "current_device")
    real = [getattr(torch.cuda, n) for n in names]
    with prefork.nvml_device_queries():
        assert (torch.cuda.get_device_capability(), torch.cuda.get_device_name(0)) == expected
        # what has_triton reads: dynamo's worker cache, filled from NVML
        worker = di.CudaInterface.Worker.get_device_properties()
        assert (worker.major, worker.minor) == expected[0] and worker.total_memory == 141 * 2**30
        assert di.CudaInterface.Worker.current_device() == 0
        assert [getattr(torch.cuda, n) for n in names[2:]] == real[2:]  # never replaced: bound at import
    assert [getattr(torch.cuda, n) for n in names] == real
    # dynamo's interface binds torch.cuda's own functions, never a stand-in
    assert di.CudaInterface.get_device_properties is torch.cuda.get_device_properties
    assert "cuda" not in di.caching_worker_device_properties and "cuda" not in di.caching_worker_current_devices
    assert not torch.cuda.is_initialized()


def test_planning_and_warm_imports_never_ask_the_cuda_runtime_for_devices(tmp_path):
    """The runtime's device count initialises the CUDA driver, after which forked cells cannot use CUDA:
    the parent answers every torch.cuda.is_available() through NVML (one device here, stood in for)."""
    code = (
        "import sys, torch\n"
        "calls = []\n"
        "real = torch._C._cuda_getDeviceCount\n"
        "torch._C._cuda_getDeviceCount = lambda: calls.append(1) or real()\n"
        "torch.cuda._device_count_nvml = lambda: 1\n"
        "from harness import compose, prefork\n"
        f"plan = compose.plan(['model=flux-tiny', 'engine=sdnq', 'lora=synthetic', 'run.store={tmp_path}/s.sqlite',"
        f" 'run.cache_dir={tmp_path}/cache'])\n"
        "spec = plan.specs[0]\n"
        "prefork.warm(spec, 'cuda')\n"
        "print('runtime device-count calls:', len(calls), torch.cuda.is_initialized())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "runtime device-count calls: 0 False" in out.stdout, out.stdout + out.stderr[-3000:]


def test_device_queries_take_every_form_of_device_torch_takes(monkeypatch):
    """bitsandbytes asks ``get_device_capability(torch.cuda.device(i))``: a stand-in that failed on it made
    bitsandbytes load its CPU library in the parent, and every forked nf4 cell inherited it."""
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with prefork.nvml_device_queries():
        answers = [torch.cuda.get_device_capability(d)
                   for d in (None, 1, "cuda:1", torch.device("cuda", 1), torch.cuda.device(1), "cuda")]
    assert answers == [(9, 0), (8, 0), (8, 0), (8, 0), (8, 0), (9, 0)]


def test_arch_list_is_asked_in_a_child_and_a_marked_fork_is_seen():
    """optimum-quanto reads ``torch.cuda.get_arch_list()`` when imported; asked in the parent, it marks every
    later fork as unable to use CUDA (`fork_poisoned` sees the mark, `is_initialized` does not)."""
    code = (
        "import sys, types, torch\n"
        "from tests.harness.test_prefork import _FakeNvml\n"
        "sys.modules['pynvml'] = _FakeNvml()\n"
        "from harness import prefork\n"
        "before = prefork.fork_poisoned()\n"
        "with prefork.nvml_device_queries():\n"
        "    inside = torch.cuda.get_arch_list()\n"
        "after_block = prefork.fork_poisoned()\n"
        "real = torch.cuda.get_arch_list()\n"
        "print(before, after_block, inside == real and bool(real), prefork.fork_poisoned(), torch.cuda.is_initialized())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "False", "True", "True", "False"], out.stdout + out.stderr[-3000:]


def test_a_marked_fork_makes_every_later_cell_spawn(monkeypatch):
    from harness import isolate

    monkeypatch.setattr(isolate, "_SPAWN", False)
    assert isolate.start_method() == "fork"
    isolate.spawn_from_now_on()
    assert isolate.spawned_from_now_on() and isolate.start_method() == "spawn"
