"""Fabricated result records with real PNG images on disk, for the report tests (no model runs)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def record(engine, dtype, status="ok", *, model="flux-dev", device="NVIDIA H200", steps_per_s=None, peak=None,
           weight=None, psnr=None, lpips=None, images=(), error=None, offload="none", compile="none",
           synthetic=True, created="2026-11-21T00:00:00"):
    return {
        "cell_key": f"{model}-{device}-{engine}-{dtype}-{offload}-{compile}", "model": model, "engine": engine,
        "dtype": dtype, "mode": "post", "offload": offload, "compile": compile, "status": status,
        "created": created,
        "metrics": {"weight_gib": weight, "mem_after_load_gib": peak and peak * 0.9, "peak_mem_gib": peak,
                    "steps_per_s": steps_per_s, "s_per_image": steps_per_s and 28 / steps_per_s,
                    "memory_kind": "cuda"},
        "quality": {"psnr_db": psnr, "lpips": lpips, "synthetic_weights": synthetic, "reference": "refkey"},
        "error": {"type": "RuntimeError", "message": error} if error else None,
        "workload": {"name": "standard", "steps": 28, "width": 1024, "height": 1024, "n_prompts": 2, "n_seeds": 1},
        "env": {"device_name": device, "versions": {"torch": "2.11.0", "diffusers": "0.42.1"}, "git_sha": "abc123",
                "driver": "570.1", "cuda": "12.8"},
        "images": [str(p) for p in images],
    }


def images(folder: Path, name: str, colour: tuple[int, int, int], size=(64, 48)) -> list[Path]:
    """Two PNGs (two prompts) in ``folder/name``, named like the harness names them."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(2):
        path = out / f"image_p{p}_s0.png"
        Image.new("RGB", size, tuple(min(255, c + 40 * p) for c in colour)).save(path)
        paths.append(path)
    return paths


def leaderboard(folder: Path) -> list[dict]:
    """Two models on one GPU: BF16, two quantized cells with images, a failure; SDXL with one cell."""
    return [
        record("bf16", "bf16", steps_per_s=2.0, peak=33.5, weight=22.2, images=images(folder, "bf16", (200, 30, 30))),
        record("torchao", "int8", steps_per_s=2.6, peak=22.0, weight=11.1, psnr=31.5, lpips=0.08,
               images=images(folder, "int8", (30, 200, 30))),
        record("torchao", "int4", steps_per_s=1.5, peak=16.0, weight=6.2, psnr=22.0, lpips=0.25,
               images=images(folder, "int4", (30, 30, 200))),
        record("bnb", "nf4", "oom", error="CUDA out of memory. Tried to allocate 2.00 GiB"),
        record("bf16", "bf16", model="sdxl", steps_per_s=9.0, peak=9.5, weight=4.8,
               images=images(folder, "sdxl-bf16", (90, 90, 90))),
        record("torchao", "int8", model="sdxl", steps_per_s=8.0, peak=7.0, weight=2.4, psnr=35.0,
               images=images(folder, "sdxl-int8", (120, 90, 60))),
    ]
