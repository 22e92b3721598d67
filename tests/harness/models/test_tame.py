"""Synthetic weights of every tiny family are numerically tame: the denoiser's first output in a BF16
pipeline agrees with the FP32 pipeline's (same drawn numbers) within 5%, and is neither dead nor exploding."""
import pytest
import torch

from harness.synthetic import ARCHITECTURES, build_pipeline
from harness.generate import pipeline_kwargs
from tests.harness.models.families import FAMILIES


def _first_denoiser_output(pipe, denoiser: str, kwargs: dict) -> torch.Tensor:
    seen = []

    def keep(module, args, out):
        sample = out[0] if isinstance(out, tuple) else out.sample
        seen.append(torch.cat([t.float().flatten() for t in sample]) if isinstance(sample, list) else sample.float())

    handle = getattr(pipe, denoiser).register_forward_hook(keep)
    try:
        pipe(prompt="a photo of a red fox", generator=torch.Generator().manual_seed(0), **kwargs)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", FAMILIES)
def test_bf16_and_fp32_denoiser_outputs_agree(compose, model):
    from harness.validate import validate

    cell = validate(compose([f"model={model}", "workload.height=64", "workload.width=64", "workload.steps=2"]),
                    check_environment=False)
    kwargs = {**pipeline_kwargs(cell), "output_type": "latent"}
    arch = ARCHITECTURES[cell.model["synthetic"]]
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        pipe = build_pipeline(arch, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        outputs[dtype] = _first_denoiser_output(pipe, cell.model["denoiser"], kwargs)
    ref, out = outputs[torch.float32], outputs[torch.bfloat16]
    rel = ((out - ref).norm() / ref.norm()).item()
    assert rel < 0.05, rel
    assert 0.1 < ref.std().item() < 10  # neither dead nor exploding
