"""What a result was measured on: hardware, driver, library versions, harness git sha."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

CORE_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "hydra-core", "torchmetrics")
REPO_ROOT = Path(__file__).resolve().parent.parent


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_device(requested: str) -> torch.device:
    """``auto`` = the first CUDA GPU when there is one (checked without initialising CUDA), else CPU.
    ``cuda`` = ``cuda:0`` (of the GPUs this process sees)."""
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={requested!r} but no CUDA GPU is available; use run.device=cpu or auto")
    if device.type == "cuda" and device.index is None:
        # torch.cuda.set_device / set_per_process_memory_fraction reject a device without an index
        device = torch.device("cuda", 0)
    return device


@lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The harness commit (``-dirty`` with local changes); $HARNESS_GIT_SHA for copies without .git."""
    if os.environ.get("HARNESS_GIT_SHA"):
        return os.environ["HARNESS_GIT_SHA"]
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    """Human name of the device; on CUDA this initialises CUDA, so only call it in a cell process."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def hardware_name(device_type: str) -> str:
    """Name of the first GPU (via NVML, no CUDA context) or of the CPU, for cache keys in the parent."""
    if device_type == "cuda":
        try:
            import pynvml

            pynvml.nvmlInit()
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else name
        except Exception:  # noqa: BLE001 - NVML is optional
            return "cuda"
    return _cpu_model()


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def collect(device: torch.device, extra_packages: tuple[str, ...] = ()) -> dict:
    """The environment block of a result record (call inside the cell process)."""
    env = {
        "device": str(device),
        "device_name": device_name(device),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: package_version(p) for p in (*CORE_PACKAGES, *extra_packages)},
        "git_sha": git_sha(),
        "cuda": torch.version.cuda,
    }
    env["compile_cache"] = compile_cache()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_total_gib"] = round(props.total_memory / 2**30, 2)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["driver"] = _nvidia_driver()
    return env


def compile_cache(limit: int = 10000) -> dict:
    """torch.compile's cache as the cell starts: its folder (``TORCHINDUCTOR_CACHE_DIR`` or inductor's
    default) and how many files it holds (counted up to ``limit``): 0 means every first-call figure of the
    cell comes from an empty cache, more means it was warm."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir

            folder = default_cache_dir()
        except Exception:  # noqa: BLE001 - a torch without it: no figure
            return {"dir": None, "files_at_start": None}
    files = 0
    for _, _, names in os.walk(folder):
        files += len(names)
        if files >= limit:
            break
    return {"dir": folder, "files_at_start": min(files, limit)}


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # noqa: BLE001
        return None
