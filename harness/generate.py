"""Warm up, then generate the workload's images while timing steps and whole calls."""
from __future__ import annotations

import time

import torch

from harness import progress
from harness.measure import MemoryProbe, StepClock, median, spread, sync

#: From this many repeats on, the record carries the run-to-run spread of steps/s and s/image.
SPREAD_MIN_REPEATS = 3


def pipeline_kwargs(cell) -> dict:
    """Keyword arguments of every call: the workload's size and steps, and what the model config says
    (``guidance_scale`` and ``max_sequence_length`` unless null, ``frames`` as num_frames, an input image for
    editing models, then ``model.call`` as it stands)."""
    w, m = cell.workload, cell.model
    kwargs = {"height": w["height"], "width": w["width"], "num_inference_steps": w["steps"], "output_type": "pt"}
    for key, arg in (("guidance_scale", "guidance_scale"), ("max_sequence_length", "max_sequence_length"),
                     ("frames", "num_frames")):
        if m.get(key) is not None:
            kwargs[arg] = m[key]
    if m.get("input_image"):
        kwargs["image"] = input_image(w["height"], w["width"])
    kwargs.update(m.get("call") or {})
    return kwargs


def input_image(height: int, width: int):
    """The input image of editing models: a deterministic colour gradient (PIL, RGB)."""
    from PIL import Image

    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    rgb = torch.stack([x, y, 1 - (x + y) / 2], -1)
    return Image.fromarray((rgb * 255).round().to(torch.uint8).numpy())


def frames_of(output) -> torch.Tensor:
    """A pipeline output's pictures as (N, C, H, W) in [0, 1]: images, or a video's frames in order."""
    images = getattr(output, "images", None)
    if images is None:
        images = output.frames
    return images.flatten(0, images.dim() - 4)


class NonFiniteOutput(RuntimeError):
    """The pipeline produced NaN or infinite pixels: the cell failed (its images would otherwise read as
    black, and black against a black reference as a perfect score)."""


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images (N, C, H, W) -> uint8, the precision a saved PNG keeps; `NonFiniteOutput` when any
    pixel is NaN or infinite."""
    images = images.float()
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteOutput(f"the pipeline produced {bad} non-finite (NaN / inf) pixel values of "
                              f"{images.numel()}")
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def generate(pipe, cell, device: torch.device, probe: MemoryProbe, label: str = "") -> dict:
    """Returns ``images`` (uint8, one per prompt x seed in workload order; a video model's every frame, so
    quality is per frame) and timing/memory figures (for video, ``s_per_image`` is seconds per video).

    The first warm-up call gives ``first_call_s`` (compile / autotune land there); the peak memory
    counters are reset after warm-up so the peaks are those of steady-state generation. Each call and
    each finished step is a `harness.progress` stage (one pipe write between steps, after the step's
    timestamp); ``label`` prefixes every call's stage name (``with LoRA: first call (1 of 2)``).

    With ``workload.repeats >= SPREAD_MIN_REPEATS`` it also returns ``spread``: `harness.measure.spread` of
    each timed call's own s/image and steps/s (the inverse of that call's median step interval), keyed
    ``s_per_image`` / ``steps_per_s``; otherwise ``spread`` is empty."""
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
        return frames_of(pipe(prompt=prompt, generator=generator, callback_on_step_end=on_step_end, **kwargs))

    def call_name(index: int) -> str:  # index counts every call, warm-up ones first
        kind = "first call" if index == 0 else ("warm-up call" if index < n_warmup else "timed call")
        return f"{label}{kind} ({index + 1} of {n_calls})"

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
    call_speeds: list[float] = []
    for rep in range(cell.workload["repeats"]):
        for prompt in prompts:
            for seed in seeds:
                clock.begin()
                out = call(prompt, seed, call_name(n_warmup + len(call_times)))
                sync(device)
                call_times.append(time.perf_counter() - clock.start)
                intervals = clock.step_intervals()
                step_times.extend(intervals)
                if median(intervals):
                    call_speeds.append(1.0 / median(intervals))
                if rep == 0:
                    images.extend(to_uint8(out))
    if first_call_s is None:
        first_call_s = call_times[0]
    step_s = median(step_times)
    runs = {}
    if cell.workload["repeats"] >= SPREAD_MIN_REPEATS:
        runs = {k: v for k, v in (("steps_per_s", spread(call_speeds)), ("s_per_image", spread(call_times)))
                if v is not None}
    return {"images": images, "first_call_s": first_call_s, "s_per_image": median(call_times),
            "step_s": step_s, "steps_per_s": (1.0 / step_s) if step_s else None,
            "n_timed_calls": len(call_times), "n_step_samples": len(step_times), "spread": runs, **probe.peak()}
