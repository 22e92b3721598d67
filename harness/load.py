"""Load a pipeline (real or synthetic checkpoint) and quantize it with the chosen engine.

Generic over pipelines: the pipeline class is the model config's (``model.pipeline``), each component's class
the checkpoint's ``model_index.json`` entry (a diffusers or transformers class, text encoders of any
transformers class included).

Returns the pipeline and a load report: read / quantize / move seconds, per-component stored bytes
before (from the checkpoint's safetensors headers) and after, and the engine's verification counts.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import torch

from engines.base import DENOISERS, Engine, module_nbytes
from harness import checkpoint, cpu_vae, offload, synthetic
from harness.measure import GIB, sync

_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def checkpoint_folder(cell, device: torch.device) -> Path:
    """The folder to load: the real checkpoint, or the synthetic one (built here once, on the GPU
    when there is one because initialising billions of weights is fast there)."""
    if cell.checkpoint_path:
        return Path(cell.checkpoint_path)
    return synthetic.ensure_checkpoint(cell.model["synthetic"], cell.run["cache_dir"], device=device)


def pipeline_class(cell) -> type:
    """The diffusers pipeline class the model config names (a public diffusers class only)."""
    return checkpoint.component_class("diffusers", cell.model["pipeline"])


def component_name(cell, name: str) -> str:
    """The pipeline attribute of component ``name``: itself, except that a denoiser name ("transformer",
    "unet") the model does not have stands for the model's own denoiser (``model.denoiser``)."""
    denoiser = cell.model.get("denoiser")
    if name in DENOISERS and denoiser and name != denoiser and name not in _model_components(cell):
        return denoiser
    return name


def _model_components(cell) -> tuple[str, ...]:
    if cell.checkpoint_path:
        return tuple(checkpoint.module_components(checkpoint.check(Path(cell.checkpoint_path))))
    return tuple(synthetic.ARCHITECTURES[cell.model["synthetic"]].modules())


def component_class(folder: Path, name: str) -> type:
    """The class of component ``name``: only a diffusers / transformers class (`checkpoint.component_class`)."""
    library, class_name = json.loads((folder / "model_index.json").read_text())[name]
    return checkpoint.component_class(library, class_name)


def stored_nbytes(folder: Path, name: str) -> int:
    """Bytes of a component's weights as stored in the checkpoint (safetensors headers only)."""
    total = 0
    for path in (folder / name).glob("*.safetensors"):
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, t in header.items():
            if key != "__metadata__":
                total += t["data_offsets"][1] - t["data_offsets"][0]
    return total


def free_device_bytes(device: torch.device) -> int:
    """Bytes this process may still allocate on a CUDA ``device``: the driver's free memory, within the
    per-process cap when one is set."""
    free, total = torch.cuda.mem_get_info(device)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _device: 1.0)(device)
    cap = total * float(fraction)
    return int(min(free, cap - torch.cuda.memory_reserved(device)))


def quantize_for_offload(engine: Engine, name: str, module: torch.nn.Module, device: torch.device,
                         resident_budget: int = 0):
    """Quantize a component that an offload mode takes over. When the engine's quantized layers survive a
    move to the device and back (`Engine.round_trips`), it is quantized on the device (several times
    faster than from the CPU): moved there whole when the unquantized component fits in the free device
    memory, else layer by layer (`Engine.quantize_onto`, where the engine can). It then stays there while
    the device holds at most ``resident_budget`` bytes (what the offload mode accepts on the device,
    `harness.offload.resident_budget`), else it goes back to the CPU. Otherwise it is quantized where
    it is."""
    if device.type != "cuda" or engine.is_reference or not engine.round_trips:
        return engine.quantize(name, module) or module
    free = free_device_bytes(device)
    if module_nbytes(module) <= 0.9 * free:
        module.to(device)
        quantized = engine.quantize(name, module) or module
    else:
        room = int(min(0.9 * free, resident_budget - torch.cuda.memory_allocated(device)))
        quantized = engine.quantize_onto(name, module, device, room) if room > 0 else None
        if quantized is None:
            return engine.quantize(name, module) or module
        if module_nbytes(quantized) <= room:
            quantized.to(device)  # what the walk left behind: norms, embeddings, skipped layers
    torch.cuda.empty_cache()
    if torch.cuda.memory_allocated(device) > resident_budget or not _on(quantized, device):
        quantized.to("cpu")
        torch.cuda.empty_cache()
    return quantized


def _on(module: torch.nn.Module, device: torch.device) -> bool:
    return all(t.device.type == device.type for t in [*module.parameters(), *module.buffers()])


def load_pipeline(cell, engine: Engine, device: torch.device, place_on_device: bool):
    """Load + quantize. With ``place_on_device`` (offload none) the whole pipeline ends on ``device``
    and post-mode quantization runs there; otherwise the offload mode takes the components over on the CPU,
    or on the device where it accepts them there (`quantize_for_offload`)."""
    folder = checkpoint_folder(cell, device)
    pipe_cls = pipeline_class(cell)
    dtype = engine.compute_dtype
    timings: dict[str, float] = {}
    names = [component_name(cell, name) for name in cell.components]

    start = time.perf_counter()
    preloaded = {}
    if cell.mode == "pre":
        for name in names:
            preloaded[name] = engine.load_component(name, component_class(folder, name), str(folder),
                                                    torch_dtype=dtype, use_safetensors=True)
    pipe = pipe_cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, use_safetensors=True,
                                    **preloaded)
    pipe.set_progress_bar_config(disable=True)
    timings["read_s"] = time.perf_counter() - start

    t = time.perf_counter()
    resident_budget = 0 if place_on_device else offload.resident_budget(
        cell.offload["name"], cell.offload.get("options") or {}, device)
    if cell.mode == "post":
        for name in names:
            module = getattr(pipe, name)
            if place_on_device:
                module.to(device)
                setattr(pipe, name, engine.quantize(name, module) or module)
            else:
                setattr(pipe, name, quantize_for_offload(engine, name, module, device, resident_budget))
        sync(device)
    timings["quantize_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if place_on_device:
        pipe.to(device)
        sync(device)
    timings["move_s"] = time.perf_counter() - t
    timings["load_s"] = time.perf_counter() - start

    components = {}
    for name in names:
        module = getattr(pipe, name)
        counts = engine.verify(name, module)
        components[name] = {"stored_gib": stored_nbytes(folder, name) / GIB,
                            "weight_gib": module_nbytes(module) / GIB, **counts}
    all_modules = {n: m for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    report = {
        "checkpoint": str(folder),
        "synthetic": cell.checkpoint_path is None,
        "timings": timings,
        "components": components,
        "weight_gib": sum(c["weight_gib"] for c in components.values()),
        "reference_weight_gib": sum(c["stored_gib"] for c in components.values()),
        "total_weight_gib": sum(module_nbytes(m) for m in all_modules.values()) / GIB,
    }
    vae = cpu_vae.upcast(pipe, device)
    if vae is not None:
        report["vae_compute_dtype"] = vae
    return pipe, report
