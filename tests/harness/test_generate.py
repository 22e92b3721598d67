from types import SimpleNamespace

import torch

from harness import progress
from harness.generate import generate
from harness.measure import MemoryProbe


class _FakePipe:
    """Stands in for a diffusers pipeline: calls the step callback ``num_inference_steps`` times."""

    def __call__(self, prompt, generator, callback_on_step_end, num_inference_steps, **kwargs):
        for step in range(num_inference_steps):
            callback_on_step_end(self, step, 1000 - step, {})
        return SimpleNamespace(images=torch.rand(1, 3, 8, 8, generator=generator))


def _cell(warmup, repeats, seeds=(0,)):
    workload = {"height": 8, "width": 8, "steps": 3, "warmup": warmup, "repeats": repeats,
                "prompts": ["a cat"], "seeds": list(seeds)}
    return SimpleNamespace(workload=workload, model={"family": "sdxl", "guidance_scale": 5.0})


def test_every_call_and_step_is_a_stage():
    seen: list[str] = []
    progress.connect(seen.append)
    try:
        out = generate(_FakePipe(), _cell(warmup=1, repeats=1, seeds=(0, 1)), torch.device("cpu"),
                       MemoryProbe(torch.device("cpu")))
    finally:
        progress.connect(None)
    assert out["n_timed_calls"] == 2 and out["n_step_samples"] == 4
    assert seen[:4] == ["first call (1 of 3), before its first step", "first call (1 of 3), step 1 of 3 done",
                        "first call (1 of 3), step 2 of 3 done", "first call (1 of 3), step 3 of 3 done"]
    assert seen[4] == "timed call (2 of 3), before its first step"
    assert seen[-1] == "timed call (3 of 3), step 3 of 3 done" and len(seen) == 12


def test_without_warm_up_the_first_timed_call_is_the_first_call():
    seen: list[str] = []
    progress.connect(seen.append)
    try:
        generate(_FakePipe(), _cell(warmup=0, repeats=2), torch.device("cpu"), MemoryProbe(torch.device("cpu")))
    finally:
        progress.connect(None)
    assert seen[0] == "first call (1 of 2), before its first step"
    assert seen[-1] == "timed call (2 of 2), step 3 of 3 done"


def test_three_repeats_give_the_spread_of_every_timed_call():
    device = torch.device("cpu")
    out = generate(_FakePipe(), _cell(warmup=0, repeats=3, seeds=(0, 1)), device, MemoryProbe(device))
    spread = out["spread"]
    assert set(spread) == {"steps_per_s", "s_per_image"}
    for figure in spread.values():
        assert figure["n"] == 6 and figure["min"] <= figure["q1"] <= figure["median"] <= figure["q3"] <= figure["max"]
        assert figure["iqr"] == figure["q3"] - figure["q1"]
    assert spread["s_per_image"]["min"] > 0 and spread["steps_per_s"]["min"] > 0
    two = generate(_FakePipe(), _cell(warmup=0, repeats=2, seeds=(0, 1)), device, MemoryProbe(device))
    assert two["spread"] == {}  # fewer than three repeats: no spread, even with four timed calls


def test_non_finite_pixels_fail_the_cell_instead_of_reading_as_black():
    import pytest
    import torch

    from harness import status
    from harness.generate import NonFiniteOutput, to_uint8

    images = torch.rand(1, 3, 4, 4)
    assert to_uint8(images).dtype == torch.uint8
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteOutput, match="1 non-finite"):
        to_uint8(images)
    assert status.classify_exception(NonFiniteOutput("x")) == status.ERROR
