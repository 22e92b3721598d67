"""compile=cudagraph on the GPU (`pytest -m gpu`): replays match eager runs for plain and SDNQ layers, a cell
runs end to end and reports its graphs, and an offload mode is refused. Checks that touch CUDA run in a
fresh process, as in test_gpu_balanced.py."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.gpu


def _in_child(check: str, *args) -> None:
    code = f"import sys; from tests.gpu.test_gpu_cudagraph import {check}; {check}(*sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.parametrize("engine, dtype", [("bf16", "bf16"), ("sdnq", "int8"), ("sdnq", "uint4"),
                                           ("sdnq", "float8_e4m3fn")])
def test_replays_match_the_eager_forward(engine, dtype):
    _in_child("check_replays", engine, dtype)


@torch.no_grad()
def check_replays(engine, dtype):
    from engines.registry import get_engine_class
    from harness import cudagraph

    cuda = torch.device("cuda:0")
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512, dtype=torch.bfloat16) for _ in range(8)]).to(cuda)
    eng = get_engine_class(engine)(None if engine == "bf16" else dtype, "post", {})
    model = eng.quantize("transformer", model) or model
    xs = [torch.randn(16, 512, dtype=torch.bfloat16, device=cuda) for _ in range(4)]
    eager = [model(x) for x in xs]
    graphed = cudagraph.install(model)
    outs = [model(x) for x in xs]
    for a, b in zip(outs, eager):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    assert graphed.captures == 1 and graphed.replays == 4
    assert outs[0].data_ptr() != outs[1].data_ptr()  # copies, not the graph's static output


def _graphed_cell(cli, tmp_path, mode: str, *args) -> dict:
    """The record of an sdnq cell under ``mode`` that ran ok, replaying more calls than it captured."""
    proc = cli("run.device=cuda", "engine=sdnq", f"compile={mode}", "workload.height=64", "workload.width=64", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = next(json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
                  if "sdnq" in p.parent.name and "reference" not in str(p))
    assert record["status"] == "ok", record["error"]
    report = record["compile_report"]
    assert report["mode"] == mode and report["graphs_captured"] >= 1
    assert report["calls_replayed"] > report["graphs_captured"]
    return record


def test_a_cudagraph_cell_runs_and_reports_its_graphs(cli, tmp_path):
    record = _graphed_cell(cli, tmp_path, "cudagraph", "dtype=int8", "model=sdxl-tiny")
    assert record["quality"]["psnr_db"] is None or record["quality"]["psnr_db"] > 20


def test_a_regional_cudagraph_cell_compiles_blocks_and_replays_graphs(cli, tmp_path):
    record = _graphed_cell(cli, tmp_path, "regional-cudagraph", "dtype=float8_e4m3fn", "model=flux-tiny",
                           "engine.options.use_quantized_matmul=true", "engine.options.fuse_qkv=true")
    assert record["compile_report"]["blocks"]
    assert record["engine_report"]["sdnq"]["components"]["transformer"]["fused_projections"] > 0


def test_cudagraph_with_an_offload_mode_is_unsupported(cli, tmp_path):
    proc = cli("run.device=cuda", "engine=sdnq", "dtype=int8", "compile=cudagraph", "offload=balanced",
               "workload.height=64", "workload.width=64")
    record = next(json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("result.json")
                  if "sdnq" in p.parent.name and "reference" not in str(p))
    assert record["status"] == "unsupported" and "offload=balanced" in record["error"]["message"]
    assert proc.returncode == 3
