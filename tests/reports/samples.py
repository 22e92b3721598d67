"""Fabricated result records for the report tests (no model runs): leaderboard cells with real PNG images on
disk, error-matrix cells of every status with known-issue annotations, and a store holding them."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from harness.status import error_record
from harness.store import ResultStore


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


def store(path: Path, records: list[dict]) -> str:
    """An SQLite store at ``path`` holding ``records`` (in order); its location."""
    result_store = ResultStore(path)
    for r in records:
        result_store.append(r)
    return str(path)


def matrix_record(engine, dtype, offload, status, error=None, compile="none", created="2026-11-21T10:00:00",
                  model="flux-dev", device="NVIDIA H200", exc_type="RuntimeError", stage=None):
    """One error-matrix cell: 512x512, 4 steps, synthetic weights."""
    err = {**error_record(exc_type, error), "stage": stage} if error else None
    return {"cell_key": f"{model}-{engine}-{dtype}-{offload}-{compile}-{created}", "model": model, "engine": engine,
            "dtype": dtype, "mode": "post", "offload": offload, "compile": compile, "status": status,
            "created": created, "error": err,
            "workload": {"name": "quick", "steps": 4, "width": 512, "height": 512},
            "quality": {"synthetic_weights": True},
            "env": {"device_name": device, "driver": "570.86", "cuda": "12.8", "git_sha": "abc123",
                    "versions": {"torch": "2.11.0", "diffusers": "0.42.1", "bitsandbytes": "0.50.2"}}}


BLOCKWISE = "Blockwise quantization only supports 16/32-bit floats, but got torch.uint8"
OOM = "OutOfMemoryError"
_m = matrix_record
#: Every status, two cells sharing one failure, annotations that agree and disagree, a compile mode.
MATRIX = [
    _m("bf16", "bf16", "none", "ok"),
    _m("bf16", "bf16", "sequential", "ok"),
    # two cells, one failure: numbers and sizes differ, the normalized message is the same
    _m("bnb", "nf4", "sequential", "error", BLOCKWISE),
    _m("bnb", "nf4", "group", "error", BLOCKWISE, stage="first call (1 of 1), before its first step"),
    _m("quanto", "int8", "balanced", "ok"),                                      # known broken: now works
    _m("quanto", "int8", "sequential", "error", "Expected all tensors to be on the same device, but found "
       "at least two devices, cuda:0 and cpu!"),
    _m("sdnq", "int8", "balanced", "crashed", "cell process killed by SIGSEGV", exc_type="SIGSEGV"),  # documented ok
    _m("torchao", "int4", "model", "oom", "CUDA out of memory. Tried to allocate 1.50 GiB", exc_type=OOM),
    _m("torchao", "int4", "group", "oom", "CUDA out of memory. Tried to allocate 20.00 MiB", exc_type=OOM),
    _m("torchao", "int8", "sequential", "timeout", "cell exceeded its timeout of 300 s during first call (1 of 1), "
       "step 2 of 4 done (for the last 250 s)", exc_type="Timeout", stage="first call (1 of 1), step 2 of 4 done"),
    _m("gguf", "q8_0", "model", "unsupported", "offload=model needs a CUDA accelerator; this run's device is cpu",
       exc_type="Unsupported"),
    _m("gguf", "q8_0", "balanced", "unsupported",
       "offload=balanced needs a CUDA accelerator; this run's device is cpu", exc_type="Unsupported"),
    _m("torchao", "int8", "none", "error", "matmul <bad> & 'shapes' (4x8 @ 16x8)", compile="regional"),
]

#: Annotations for `MATRIX`: one reproduces, one no longer does, one fails differently, one documented ok
#: fails, an oom counting as a failure, one only unsupported here, one the matrix cannot cover.
MATRIX_KNOWN = [
    {"key": "K1", "id": "bnb-nf4-seq", "engine": "bnb", "dtype": "nf4", "offload": "sequential",
     "expect": {"status": "failure", "message": "Blockwise quantization only supports 16/32-bit floats"},
     "source": "SD.Next wiki"},
    {"key": "K2", "id": "quanto-balanced", "engine": "quanto", "dtype": ["int8", "int4"], "offload": "balanced",
     "expect": {"status": "failure", "message": "QBytesTensor.__new__() missing 5 required positional arguments"},
     "source": "SD.Next wiki"},
    {"key": "K3", "id": "quanto-seq", "engine": "quanto", "offload": "sequential",
     "expect": {"status": "error", "message": "QBytesTensor"}, "source": "made up: the message differs"},
    {"key": "K4", "id": "sdnq-balanced", "engine": "sdnq", "offload": "balanced", "expect": {"status": "ok"},
     "source": "SD.Next wiki"},
    {"key": "K5", "id": "torchao-int4-offload", "engine": "torchao", "dtype": "int4", "offload": ["model", "group"],
     "expect": {"status": "failure"}, "source": "SD.Next wiki"},
    {"key": "K6", "id": "gguf-offload", "engine": "gguf", "offload": "*", "expect": {"status": "failure"},
     "source": "SD.Next wiki"},
    {"key": "K7", "id": "nncf-fused", "engine": "nncf", "when": "fused projections", "expect": {"status": "failure"},
     "source": "SD.Next wiki"},
]
