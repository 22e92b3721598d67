"""What the parent imports before it forks a cell, so that the cell starts warm.

A forked child can use CUDA only when its parent holds no CUDA context, and several libraries a cell
needs ask the GPU for its compute capability while they are imported (torchao does, to decide which of
its kernels to register). `warm` imports them with ``torch.cuda.get_device_capability`` and
``torch.cuda.get_device_name`` answered from NVML, which reads the same figures from the driver without
creating a context; the real functions are back in place when `warm` returns. Should an import create a
context anyway, `harness.isolate.start_method` sees it and spawns the cells instead (slower, still
correct), and `warm` says so in its result.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import time

import torch

#: Imported for every cell: what loading a pipeline and comparing its images always needs.
COMMON = ("diffusers", "transformers", "torchmetrics.functional.image")


def modules_for(spec) -> list[str]:
    """Import names a cell of ``spec`` will need: the common libraries, its engine's module and packages,
    and its pipeline class's module (through diffusers' lazy attribute)."""
    from engines.registry import ENGINES

    names = list(COMMON)
    target = ENGINES.get(spec.engine)
    if target is not None:
        names.append(target.split(":")[0])
    return names


def warm(spec, device_type: str) -> dict:
    """Import what a cell of ``spec`` needs, in this (parent) process, without creating a CUDA context.

    Returns ``{"seconds", "modules", "cuda_initialised", "fork_poisoned", "failed"}``: an import that fails
    is skipped (the cell imports it again and reports the error there); ``fork_poisoned`` (`fork_poisoned`,
    checked for CUDA cells only) says whether a forked cell could still use CUDA."""
    start = time.perf_counter()
    failed: dict[str, str] = {}
    queries = nvml_device_queries() if device_type == "cuda" else contextlib.nullcontext()
    names = modules_for(spec)
    with queries:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - the cell reports its own import errors
                failed[name] = f"{type(exc).__name__}: {exc}"
        engine_packages(spec, failed)
        pipeline_class(spec, failed)
    return {"seconds": time.perf_counter() - start, "modules": names, "failed": failed,
            "cuda_initialised": torch.cuda.is_initialized(),
            "fork_poisoned": device_type == "cuda" and fork_poisoned()}


def fork_poisoned() -> bool:
    """Whether a child forked now could not use CUDA. Asking the CUDA runtime anything (its device count,
    its compiled architectures) marks every later fork of this process as unable to initialise CUDA, with
    no trace in ``torch.cuda.is_initialized()``; a probe child forked here reads the mark."""
    bad = getattr(torch._C, "_cuda_isInBadFork", None)
    if bad is None:
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(11 if bad() else 10)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 11


def engine_packages(spec, failed: dict) -> None:
    from engines.registry import get_engine_class

    try:
        cls = get_engine_class(spec.engine)
    except Exception as exc:  # noqa: BLE001
        failed[spec.engine] = f"{type(exc).__name__}: {exc}"
        return
    for package in cls.requires:
        try:
            importlib.import_module(package)
        except Exception as exc:  # noqa: BLE001
            failed[package] = f"{type(exc).__name__}: {exc}"


def pipeline_class(spec, failed: dict) -> None:
    """Import the model's pipeline class (``model.pipeline``, else its family's)."""
    from harness import synthetic

    model = spec.model or {}
    name = model.get("pipeline") or model.get("family")
    try:
        synthetic.pipeline_class(name)
    except Exception as exc:  # noqa: BLE001 - an unknown pipeline is the cell's to report
        failed[f"pipeline:{name}"] = f"{type(exc).__name__}: {exc}"


class NvmlProperties:
    """The figures of ``torch.cuda.get_device_properties`` that NVML knows, for dynamo's worker cache during
    the imports; any other is an AttributeError (the import asking for it fails in the parent, and the
    cell imports it again for itself)."""

    def __init__(self, name: str, major: int, minor: int, total_memory: int):
        self.name, self.major, self.minor, self.total_memory = name, major, minor, total_memory

    def __repr__(self) -> str:
        return f"NvmlProperties(name={self.name!r}, major={self.major}, minor={self.minor})"


@contextlib.contextmanager
def nvml_device_queries():
    """Within the block, ``torch.cuda.get_device_capability`` / ``get_device_name`` (answered from NVML),
    ``get_arch_list`` (asked in a forked child, see `_arch_list_from_a_child`) and the device
    properties that ``torch.utils._triton.has_triton`` reads through dynamo's worker cache are answered
    from NVML instead of initialising CUDA. Outside it the two functions are torch's again (a module that
    took a reference to them meanwhile keeps an NVML answer: the real figures), dynamo's cache is as it
    was and inductor's cached device properties are dropped, so nothing compiled later sees a stand-in;
    answers the libraries cached themselves, such as ``has_triton``'s, stay. Indices follow
    ``CUDA_VISIBLE_DEVICES`` (numbers or GPU UUIDs); without it, NVML's order, which is CUDA's on a host
    of identical GPUs. Without NVML the block changes nothing."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML: nothing to answer from
        yield
        return
    worker = _dynamo_worker_caches()  # imported before anything is replaced: it binds torch.cuda's functions

    def handle(device=None):
        index = _index(device)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            ident = ids[index]
            if ident.startswith(("GPU-", "MIG-")):
                return pynvml.nvmlDeviceGetHandleByUUID(ident)
            return pynvml.nvmlDeviceGetHandleByIndex(int(ident))
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def capability(device=None) -> tuple[int, int]:
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle(device))
        return int(major), int(minor)

    def name(device=None) -> str:
        value = pynvml.nvmlDeviceGetName(handle(device))
        return value.decode() if isinstance(value, bytes) else str(value)

    def properties(device=None) -> NvmlProperties:
        h = handle(device)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        return NvmlProperties(name(device), int(major), int(minor), int(pynvml.nvmlDeviceGetMemoryInfo(h).total))

    def visible_count() -> int:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return len([v for v in visible.split(",") if v.strip()])
        return int(pynvml.nvmlDeviceGetCount())

    saved = torch.cuda.get_device_capability, torch.cuda.get_device_name, torch.cuda.get_arch_list
    real_arches = torch.cuda.get_arch_list
    torch.cuda.get_device_capability, torch.cuda.get_device_name = capability, name
    torch.cuda.get_arch_list = lambda: _arch_list_from_a_child(real_arches)
    added = []
    if worker is not None:
        for cache, value in zip(worker, (lambda: 0, lambda: [properties(i) for i in range(visible_count())])):
            if "cuda" not in cache:
                cache["cuda"] = value()
                added.append(cache)
    try:
        yield
    finally:
        torch.cuda.get_device_capability, torch.cuda.get_device_name, torch.cuda.get_arch_list = saved
        for cache in added:
            cache.pop("cuda", None)
        _forget_inductor_device_properties()


def _forget_inductor_device_properties() -> None:
    import sys

    hints = sys.modules.get("torch._inductor.runtime.hints")
    create = getattr(getattr(hints, "DeviceProperties", None), "create", None)
    if create is not None and hasattr(create, "cache_clear"):
        create.cache_clear()


def _dynamo_worker_caches():
    """dynamo's per-process caches of the current device and the device properties, or None."""
    try:
        from torch._dynamo import device_interface
    except Exception:  # noqa: BLE001 - no dynamo: nothing reads it
        return None
    return device_interface.caching_worker_current_devices, device_interface.caching_worker_device_properties


def _index(device) -> int:
    """The index torch would read from ``device`` (None, an int, a string, a torch.device or a
    ``torch.cuda.device``); the current device of a process without a context is 0."""
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    if isinstance(device, torch.cuda.device):
        return max(device.idx, 0)
    device = torch.device(device)
    return device.index or 0


_ARCHES: list[str] | None = None


def _arch_list_from_a_child(real) -> list[str]:
    """``real()`` (torch.cuda.get_arch_list) run in a forked child, so the runtime call that marks forks
    happens there; the answer is cached for the process."""
    global _ARCHES
    if _ARCHES is None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                os.write(write, " ".join(real()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return []  # what torch answers without CUDA; not cached, so a later call asks again
        _ARCHES = b"".join(chunks).decode().split()
    return list(_ARCHES)
