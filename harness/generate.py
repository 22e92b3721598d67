"""Warm up, then generate the workload's images while timing steps and whole calls."""
from __future__ import annotations

import time

import torch

from harness import progress
from harness.measure import MemoryProbe, StepClock, median, sync


def pipeline_kwargs(cell) -> dict:
    w, m = cell.workload, cell.model
    kwargs = {"height": w["height"], "width": w["width"], "num_inference_steps": w["steps"],
              "guidance_scale": m["guidance_scale"], "output_type": "pt"}
    if m["family"] == "flux":
        kwargs["max_sequence_length"] = m["max_sequence_length"]
    return kwargs


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images (N, C, H, W) -> uint8, the precision a saved PNG keeps."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def generate(pipe, cell, device: torch.device, probe: MemoryProbe) -> dict:
    """Returns ``images`` (uint8, one per prompt x seed, in workload order) and timing/memory figures.

    The first warm-up call gives ``first_call_s`` (compile / autotune land there); the peak memory
    counters are reset after warm-up so the peaks are those of steady-state generation. Each call and
    each finished step is a `harness.progress` stage (one pipe write between steps, after the step's
    timestamp)."""
    kwargs = pipeline_kwargs(cell)
    prompts, seeds = cell.workload["prompts"], cell.workload["seeds"]
    steps = cell.workload["steps"]
    clock = StepClock(device)
    n_warmup, n_timed = cell.workload["warmup"], cell.workload["repeats"] * len(prompts) * len(seeds)
    n_calls = n_warmup + n_timed

    def call(prompt: str, seed: int, name: str) -> torch.Tensor:
        def on_step_end(pipe_, step, timestep, callback_kwargs):
            callback_kwargs = clock(pipe_, step, timestep, callback_kwargs)
            progress.stage(f"{name}, step {step + 1} of {steps} done")
            return callback_kwargs

        progress.stage(f"{name}, before its first step")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        # The pipeline runs under its own no_grad, as for any user; inference_mode would break
        # optimum-quanto's int4/int2 tensors ("Cannot set version_counter for inference tensor").
        return pipe(prompt, generator=generator, callback_on_step_end=on_step_end, **kwargs).images

    def call_name(index: int) -> str:  # index counts every call, warm-up ones first
        kind = "first call" if index == 0 else ("warm-up call" if index < n_warmup else "timed call")
        return f"{kind} ({index + 1} of {n_calls})"

    first_call_s = None
    for i in range(n_warmup):
        clock.begin()
        call(prompts[0], seeds[0], call_name(i))
        sync(device)
        if i == 0:
            first_call_s = time.perf_counter() - clock.start

    probe.reset_peak()
    images: list[torch.Tensor] = []
    call_times: list[float] = []
    step_times: list[float] = []
    for rep in range(cell.workload["repeats"]):
        for prompt in prompts:
            for seed in seeds:
                clock.begin()
                out = call(prompt, seed, call_name(n_warmup + len(call_times)))
                sync(device)
                call_times.append(time.perf_counter() - clock.start)
                step_times.extend(clock.step_intervals())
                if rep == 0:
                    images.append(to_uint8(out)[0])
    if first_call_s is None:
        first_call_s = call_times[0]
    step_s = median(step_times)
    return {"images": images, "first_call_s": first_call_s, "s_per_image": median(call_times),
            "step_s": step_s, "steps_per_s": (1.0 / step_s) if step_s else None,
            "n_timed_calls": len(call_times), "n_step_samples": len(step_times), **probe.peak()}
