"""Offload modes and the numbers (`pytest -m gpu`): BF16 under model and balanced offload computes exactly
what offload=none computes (weights only move between calls, the kernels are the same); sequential and
group offload are compared and their largest difference reported, since they are the modes that get a
noise floor (`harness.floor`). Runs in a fresh process, as in test_gpu_balanced.py."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.gpu


def test_bf16_under_each_offload_mode_against_offload_none(cache_dir):
    code = f"from tests.gpu.test_gpu_offload_numerics import check; check({str(cache_dir)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(proc.stdout)


def _images(cache_dir, mode):
    import torch

    from harness import offload, synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    cuda = torch.device("cuda:0")
    if mode == "none":
        pipe.to(cuda)
    offload.apply(pipe, mode, {}, cuda)
    out = pipe("a red fox", height=64, width=64, num_inference_steps=4, output_type="pt",
               generator=torch.Generator("cpu").manual_seed(0)).images
    return out.float().cpu()


def check(cache_dir):
    import torch

    reference = _images(cache_dir, "none")
    for mode in ("model", "balanced"):
        assert torch.equal(_images(cache_dir, mode), reference), f"offload={mode} changed the pixels"
    for mode in ("sequential", "group"):
        diff = (_images(cache_dir, mode) - reference).abs().max().item()
        print(f"offload={mode}: largest pixel difference from offload=none {diff:.3g}")
        assert diff < 0.05
