"""The LoRA part of a cell, after the cell has generated without it: load the LoRA into the ready pipeline
(timed), generate the same workload again, unload it and check the denoiser came back bit for bit; then,
in the compare stage, the retention figures against the LoRA reference.
"""
from __future__ import annotations

import time

import torch

from harness import progress
from harness.generate import generate
from harness.lora import DENOISER, apply
from harness.lora.fingerprint import differences, fingerprint
from harness.lora.retention import retention
from harness.measure import MemoryProbe, sync

SYNTHETIC_NOTE = ("synthetic LoRA (random weights): retention measures how much of a numerical perturbation "
                  "survives quantization, not whether a trained LoRA's style or subject does")


def run(pipe, engine, cell, device: torch.device, probe: MemoryProbe, without: dict) -> tuple[dict, dict]:
    """(the generation with the LoRA, the start of ``lora_report``); ``without`` is the cell's generation
    before the LoRA was loaded."""
    family = cell.model["family"]
    component = DENOISER[family]
    progress.stage("LoRA load")
    before = fingerprint(getattr(pipe, component))
    sync(device)
    start = time.perf_counter()
    report = apply.load(pipe, engine, cell.lora, family)
    sync(device)
    report["load_s"] = time.perf_counter() - start
    report["mem_with_lora_gib"] = probe.current()["allocated_gib"]
    gen = generate(pipe, cell, device, probe, label="with LoRA: ")
    progress.stage("LoRA unload")
    apply.unload(pipe, engine, family)
    changed = differences(before, fingerprint(getattr(pipe, component)))
    report.update(unload_exact=not changed, unload_difference=changed, unavailable={})
    steps, steps_without = gen.get("steps_per_s"), without.get("steps_per_s")
    report.update(steps_per_s_without=steps_without, s_per_image_without=without.get("s_per_image"),
                  first_call_s_without=without.get("first_call_s"),
                  peak_mem_gib_without=without.get("peak_allocated_gib"),
                  speed_ratio=(steps / steps_without) if steps and steps_without else None,
                  files=cell.lora.get("files") or [])
    if cell.lora["name"] == "synthetic":
        report["note"] = SYNTHETIC_NOTE
    return gen, report


def compare(report: dict, quantized: list, quantized_lora: list, reference: tuple | None, key: str) -> dict:
    """``report`` with the retention figures against the LoRA reference ``(BF16, BF16 + LoRA)`` images."""
    report["reference"] = key
    if reference is None:
        report["unavailable"]["retention"] = "no LoRA reference images (BF16 and BF16 + LoRA) for this workload"
        return report
    found = retention(quantized, quantized_lora, *reference)
    report.update(retention_cosine=found["cosine"], retention_psnr_db=found["psnr_db"],
                  retention_magnitude=found["magnitude"], bf16_delta_rms=found["bf16_delta_rms"])
    report["unavailable"].update({f"retention_{k}" if k != "all" else "retention": v
                                  for k, v in found["unavailable"].items()})
    return report
