"""GPU tests: run on the device with `pytest -m gpu` (skipped without CUDA)."""
import json

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_cuda_cell_reports_gpu_memory(cli, tmp_path):
    proc = cli("run.device=cuda")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = next(json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
                  if "torchao" in str(p.parent.name) and "reference" not in str(p))
    assert record["status"] == "ok" and record["metrics"]["memory_kind"] == "cuda"
    assert record["metrics"]["mem_after_load_gib"] > 0 and record["env"]["device_name"].startswith("NVIDIA")


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_offload_keeps_denoiser_off_gpu_between_calls(mode, cache_dir):
    from harness import offload, synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    device = torch.device("cuda:0")
    offload.apply(pipe, mode, {}, device)
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: seen.append(next(m.parameters()).device.type)
                                               if mode == "model" else None)
    pipe("a fox", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="pt")
    assert next(pipe.transformer.parameters()).device.type == "cpu" or mode != "model"
    if mode == "model":
        assert seen and set(seen) == {"cuda"}
