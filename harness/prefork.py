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

    Returns ``{"seconds", "modules", "cuda_initialised", "failed"}``: an import that fails is skipped
    (the cell imports it again and reports the error there)."""
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
            "cuda_initialised": torch.cuda.is_initialized()}


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
    from harness import synthetic

    family = (spec.model or {}).get("family")
    try:
        synthetic.pipeline_class(family)
    except Exception as exc:  # noqa: BLE001 - an unknown family is the cell's to report
        failed[f"pipeline:{family}"] = f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def nvml_device_queries():
    """Within the block, ``torch.cuda.get_device_capability`` / ``get_device_name`` read NVML instead of
    initialising CUDA. Indices follow ``CUDA_VISIBLE_DEVICES`` (numbers or GPU UUIDs); without it, NVML's
    order, which is CUDA's on a host of identical GPUs. Without NVML the block changes nothing."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML: nothing to answer from
        yield
        return
    saved = torch.cuda.get_device_capability, torch.cuda.get_device_name

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

    torch.cuda.get_device_capability, torch.cuda.get_device_name = capability, name
    try:
        yield
    finally:
        torch.cuda.get_device_capability, torch.cuda.get_device_name = saved


def _index(device) -> int:
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    device = torch.device(device)
    return device.index or 0
