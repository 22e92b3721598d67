"""One cell, end to end, inside its isolated process:
check platform -> load + quantize -> offload -> compile -> warm up -> generate + measure -> [LoRA: load it,
generate again, unload] -> compare.

A cell with a LoRA reports the figures with the LoRA (metrics, quality against BF16 + LoRA) and, in
``lora_report``, the same cell's figures without it and the retention of the LoRA's effect.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engines.base import Unsupported
from engines.registry import get_engine_class
from harness import compilation, env, offload, progress, quality, reference
from harness.generate import generate
from harness.load import load_pipeline
from harness.measure import MemoryProbe, host_peak_rss_gib, sync
from harness.spec import CellSpec


@dataclass
class CellJob:
    cell: CellSpec
    out_dir: str
    reference_key: str
    #: This cell is the BF16 reference of its workload: save its images as the reference.
    save_reference: bool
    #: This cell is a noise floor (`harness.floor`): save its images under this key in the reference cache.
    floor_key: str | None = None


def quiet() -> None:
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def apply_gpu_cap(run: dict, device: torch.device) -> float | None:
    """Cap this process's GPU memory (``run.gpu_memory_fraction`` or ``run.gpu_memory_gib``); return the
    cap in GiB, or None when uncapped. A GiB cap above the card is `Unsupported` (the GPU is too small)."""
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = run.get("gpu_memory_fraction")
    if run.get("gpu_memory_gib"):
        fraction = run["gpu_memory_gib"] * 2**30 / total
        if fraction > 1:
            raise Unsupported(f"run.gpu_memory_gib={run['gpu_memory_gib']:g} is more than this GPU has "
                              f"({total / 2**30:.1f} GiB)")
    if not fraction:
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return round(fraction * total / 2**30, 3)


def measure(job: CellJob) -> dict:
    """Run ``job`` and return the payload of a result record (metrics, quality, reports, env)."""
    quiet()
    cell = job.cell
    device = env.resolve_device(cell.run["device"])
    engine_cls = get_engine_class(cell.engine)
    partial: dict = {}
    try:
        progress.stage("set-up")
        if cell.run.get("host_memory_limit_gib"):
            import resource

            limit = int(cell.run["host_memory_limit_gib"] * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if device.type == "cuda":
            torch.cuda.set_device(device)
            cap_gib = apply_gpu_cap(cell.run, device)
        t_env = time.perf_counter()
        partial["env"] = env.collect(device, tuple(engine_cls.package_versions()))
        overhead = {"env_s": time.perf_counter() - t_env}
        if device.type == "cuda":
            partial["env"]["gpu_cap_gib"] = cap_gib
        engine = engine_cls(cell.dtype, cell.mode, cell.engine_options, cache_dir=cell.run["cache_dir"])
        partial["engine_report"] = engine.report()
        engine.check_platform(device)
        offload.check(cell.offload["name"], device)
        compilation.check(cell.compile["name"], device, cell.offload["name"], lora=cell.has_lora)
        if cell.has_lora:
            if cell.lora.get("unsupported"):
                raise Unsupported(cell.lora["unsupported"])
            engine.check_lora(bool(cell.lora["options"].get("fuse")), device)

        probe = MemoryProbe(device)
        probe.reset_peak()
        on_device = cell.offload["name"] == "none"
        progress.stage("load + quantize")
        pipe, load_report = load_pipeline(cell, engine, device, place_on_device=on_device)
        after_load = probe.current()
        host_peak_load = host_peak_rss_gib()
        progress.stage("offload")
        t_offload = time.perf_counter()
        offload_report = offload.apply(pipe, cell.offload["name"], cell.offload.get("options") or {}, device,
                                       engine=engine)
        sync(device)
        offload_s = time.perf_counter() - t_offload
        progress.stage("compile")
        compile_report = compilation.apply(pipe, cell.compile["name"], cell.compile.get("fullgraph", False),
                                           cell.compile.get("dynamic", False))
        gen = generate(pipe, cell, device, probe)
        lora_report = None
        if cell.has_lora:
            from harness.lora import phase

            without, images_without = gen, gen.pop("images")
            gen, lora_report = phase.run(pipe, engine, cell, device, probe, without)
        offload_report.update(offload.stats(pipe))
        compile_report.update(compilation.stats(pipe))
        images = gen.pop("images")
        progress.stage("compare")
        t_images = time.perf_counter()
        image_paths = save_images(images, Path(job.out_dir), cell) if cell.metrics.get("save_images") else []
        overhead["images_s"] = time.perf_counter() - t_images
        t_quality = time.perf_counter()

        texts = [p for p in cell.workload["prompts"] for _ in cell.workload["seeds"]
                 for _ in range(frames_per_output(images, cell))]
        meta = {"cell": cell.config, "env": partial["env"]}
        ref_key = job.reference_key
        if cell.has_lora:
            ref_key = reference.lora_reference_key(job.reference_key, cell.lora)
            if job.save_reference:
                reference.save_lora(cell.run["cache_dir"], ref_key, images_without, images, meta)
            lora_ref = reference.load_lora(cell.run["cache_dir"], ref_key)
            lora_report = phase.compare(lora_report, images_without, images, lora_ref, ref_key)
            ref = None if lora_ref is None else lora_ref[1]
        else:
            if job.save_reference:
                reference.save(cell.run["cache_dir"], job.reference_key, images, meta)
            if job.floor_key:
                reference.save(cell.run["cache_dir"], job.floor_key, images, meta)
            ref = reference.load(cell.run["cache_dir"], job.reference_key)
        if ref is None:
            quality_block = {"psnr_db": None, "ssim": None, "ms_ssim": None, "lpips": None, "clip_score": None,
                             "unavailable": {"all": "no BF16 reference images for this workload"
                                             + (" and LoRA" if cell.has_lora else "")}}
        else:
            quality_block = quality.compare(images, ref, texts, cell.metrics, device=device)
        overhead["quality_s"] = time.perf_counter() - t_quality
        quality_block["reference"] = ref_key
        quality_block["synthetic_weights"] = load_report["synthetic"]
        if load_report["synthetic"]:
            quality_block["note"] = ("synthetic random weights: quality columns measure numerical deviation "
                                     "from BF16, not image quality")
        metrics = {
            "load_s": load_report["timings"]["load_s"] + offload_s,
            "offload_s": offload_s,
            "read_s": load_report["timings"]["read_s"],
            "quantize_s": load_report["timings"]["quantize_s"],
            "move_s": load_report["timings"]["move_s"],
            "first_call_s": gen["first_call_s"],
            "steps_per_s": gen["steps_per_s"],
            "step_s": gen["step_s"],
            "s_per_image": gen["s_per_image"],
            "mem_after_load_gib": after_load["allocated_gib"],
            "reserved_after_load_gib": after_load["max_reserved_gib"],
            "peak_mem_gib": gen["peak_allocated_gib"],
            "peak_reserved_gib": gen["peak_reserved_gib"],
            "host_peak_rss_gib": host_peak_load,
            "weight_gib": load_report["weight_gib"],
            "reference_weight_gib": load_report["reference_weight_gib"],
            "total_weight_gib": load_report["total_weight_gib"],
            "memory_kind": "cuda" if device.type == "cuda" else "host_rss",
            "n_timed_calls": gen["n_timed_calls"],
            "n_step_samples": gen["n_step_samples"],
            "spread": gen.get("spread") or {},
            "overhead": overhead,
        }
        engine_report = {**engine.report(), "components": load_report["components"],
                         "checkpoint": load_report["checkpoint"]}
        if "vae_compute_dtype" in load_report:  # harness.cpu_vae
            engine_report["vae_compute_dtype"] = load_report["vae_compute_dtype"]
        return {"metrics": metrics, "quality": quality_block, "engine_report": engine_report,
                "lora_report": lora_report,
                "offload_report": offload_report, "compile_report": compile_report, "env": partial["env"],
                "images": [str(p) for p in image_paths]}
    except BaseException as exc:
        exc.partial = partial  # type: ignore[attr-defined]
        raise


def frames_per_output(images: list, cell: CellSpec) -> int:
    """Images per prompt x seed: 1 for an image model, the frames of each video for a video model."""
    outputs = len(cell.workload["prompts"]) * len(cell.workload["seeds"])
    return max(1, len(images) // max(1, outputs))


def save_images(images: list[torch.Tensor], out_dir: Path, cell: CellSpec) -> list[Path]:
    """One PNG per image, in workload order: ``image_p{prompt}_s{seed}.png``; a video's every frame as
    ``image_p{prompt}_s{seed}_f{frame}.png``."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    frames = frames_per_output(images, cell)
    paths = []
    i = 0
    for p_idx, _ in enumerate(cell.workload["prompts"]):
        for seed in cell.workload["seeds"]:
            for f in range(frames):
                name = f"image_p{p_idx}_s{seed}" + (f"_f{f}" if frames > 1 else "") + ".png"
                path = out_dir / name
                # Lossless at every level; level 1 writes a 1024x1024 PNG in about a quarter of the default's time.
                Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path, compress_level=1)
                paths.append(path)
                i += 1
    return paths
