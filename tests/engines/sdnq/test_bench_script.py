"""scripts/bench_sdnq.py on CPU (--tiny): rows side by side with ratios, each row's first call from its own
empty compile cache, absent peers and GPU-only rows reported as such."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(900)
def test_tiny_benchmark_rows_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    configs = "bf16 eager,sdnq int8,sdnq int8 fused qkv,torchao int8 weight-only,public sdnq int8,bf16 cudagraph"
    proc = subprocess.run([sys.executable, "scripts/bench_sdnq.py", "--tiny", "--no-pre", "--iters", "2",
                           "--warmup", "1", "--configs", configs, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["config"]: r for r in result["rows"]}
    assert result["fresh_cache"] is True
    assert rows["bf16 eager"]["status"] == "ok" and rows["bf16 eager"]["rel_err_vs_bf16"] == 0
    assert rows["sdnq int8"]["status"] == "ok" and 0 < rows["sdnq int8"]["rel_err_vs_bf16"] < 0.05
    assert rows["sdnq int8"]["s_per_step_min"] <= rows["sdnq int8"]["s_per_step"] <= rows["sdnq int8"]["s_per_step_max"]
    assert rows["sdnq int8 fused qkv"]["rel_err_vs_bf16"] == rows["sdnq int8"]["rel_err_vs_bf16"]  # fusing is exact
    assert rows["bf16 cudagraph"]["status"] == "CUDA graphs need a CUDA device"
    assert rows["public sdnq int8"]["status"] in ("ok", "sdnq not installed")
    assert "| x BF16 eager | x best peer |" in proc.stdout and "| bf16 eager | " in proc.stdout
