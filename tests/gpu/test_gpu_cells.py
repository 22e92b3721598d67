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


def test_a_gib_cap_is_applied_and_recorded(cli, tmp_path):
    proc = cli("run.device=cuda", "engine=bf16", "offload=balanced", "run.gpu_memory_gib=2",
               "workload.height=64", "workload.width=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = next(json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
                  if "reference" not in str(p))
    assert record["status"] == "ok", record["error"]
    assert record["env"]["gpu_cap_gib"] == 2.0 and 0 < record["metrics"]["peak_mem_gib"] < 2.0
    assert record["offload_report"]["usable_gib"] == 2.0


def test_parent_holds_no_cuda_context_after_a_gpu_cell(cache_dir, store_path, tmp_path, compose):
    from harness import runner
    from harness.validate import validate

    cell = validate(compose([f"run.cache_dir={cache_dir}", f"run.store={store_path}", "engine=bf16",
                             "workload.height=64", "workload.width=64"]))
    record = runner.run(cell, str(tmp_path / "run")).record
    assert record["status"] == "ok", record["error"]
    assert not torch.cuda.is_initialized()


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_offload_moves_the_denoiser(mode, cache_dir):
    """Before the call the denoiser's weights are off the GPU; its forward computes on the GPU."""
    from harness import offload, synthetic

    folder = synthetic.ensure_checkpoint("flux-tiny", cache_dir)
    pipe = synthetic.pipeline_class("flux").from_pretrained(folder, torch_dtype=torch.bfloat16)
    offload.apply(pipe, mode, {}, torch.device("cuda:0"))
    first = pipe.transformer.x_embedder
    before = first.weight.device.type
    during = []
    first.register_forward_hook(lambda m, a, o: during.append(o.device.type))
    pipe("a fox", height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="pt")
    assert before in ("cpu", "meta"), before
    assert during and set(during) == {"cuda"}, during


def test_a_sweep_of_every_engine_forks_cells_that_use_cuda(cli, tmp_path):
    """One sweep process, every engine: the parent's warm imports (bitsandbytes choosing its library,
    optimum-quanto reading the compiled architectures) must leave each forked cell able to use CUDA, and
    bitsandbytes on its CUDA library."""
    proc = cli("-m", "run.device=cuda", "model=sdxl-tiny", "engine=bf16,bnb,quanto,sdnq,torchao,gguf",
               "workload.height=64", "workload.width=64", "workload.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
               if "reference" not in str(p)]
    status = {r["engine"]: (r["status"], (r.get("error") or {}).get("message", "")[:200]) for r in records}
    assert {"bf16", "bnb", "quanto", "sdnq", "torchao", "gguf"} <= set(status), status
    assert all(s == "ok" for s, _ in status.values()), status
    assert "warning: an import asked the CUDA runtime" not in proc.stdout + proc.stderr
