"""The README's commands, end to end, in subprocesses (as a user runs them)."""
import json
import sqlite3
from pathlib import Path

import pytest

REQUIRED = {"status", "error", "engine", "dtype", "offload", "compile", "model", "metrics", "quality", "env"}
METRICS = {"load_s", "first_call_s", "steps_per_s", "s_per_image", "mem_after_load_gib", "peak_mem_gib",
           "peak_reserved_gib", "host_peak_rss_gib", "weight_gib"}
QUALITY = {"psnr_db", "ssim", "ms_ssim", "lpips", "clip_score", "unavailable"}


def _results(root: Path):
    return sorted(root.rglob("result.json"))


@pytest.mark.timeout(180)  # ~12 s idle (a BF16 reference and a torchao cell): 3x that busy, with a margin
def test_default_run_is_a_real_quantized_cell(cli, tmp_path, store_path):
    # its own cache: the BF16 reference is computed (and stored) by this run, whatever ran before it
    proc = cli(f"run.cache_dir={tmp_path / 'own-cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torchao:int8" in proc.stdout and "PSNR vs BF16" in proc.stdout
    records = [json.loads(p.read_text()) for p in _results(tmp_path / "outputs")]
    cell = next(r for r in records if r["engine"] == "torchao")
    ref = next(r for r in records if r["engine"] == "bf16")
    assert REQUIRED <= set(cell) and METRICS <= set(cell["metrics"]) and QUALITY <= set(cell["quality"])
    assert cell["status"] == "ok" and ref["status"] == "ok"
    m = cell["metrics"]
    # int8 weights: about half of the BF16 transformer (plus scales)
    assert 0.45 < m["weight_gib"] / ref["metrics"]["weight_gib"] < 0.6
    assert m["steps_per_s"] > 0 and m["s_per_image"] > 0 and m["first_call_s"] > 0
    assert 25 < cell["quality"]["psnr_db"] < 80 and 0.9 < cell["quality"]["ssim"] <= 1
    assert cell["quality"]["lpips"] is None and "lpips" in cell["quality"]["unavailable"]
    assert cell["env"]["versions"]["torch"] and cell["env"]["git_sha"]
    assert cell["engine_report"]["components"]["transformer"]["quantized_modules"] > 0
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2


@pytest.mark.timeout(300)  # ~20 s idle (4 cells, a report, a resume): 3x that busy, with a margin
def test_sweep_2x2_then_leaderboard_then_resume(cli, tmp_path, store_path):
    proc = cli("+experiment=smoke")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(store_path) as db:
        rows = db.execute("SELECT model, engine, status FROM results").fetchall()
    assert sorted((m, e) for m, e, _ in rows) == [("flux-tiny", "bf16"), ("flux-tiny", "torchao"),
                                                  ("sdxl-tiny", "bf16"), ("sdxl-tiny", "torchao")]
    assert {s for _, _, s in rows} == {"ok"}

    out = tmp_path / "board"
    proc = cli("report", "--store", str(store_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    md = (out / "leaderboard.md").read_text()
    assert "## flux-tiny" in md and "## sdxl-tiny" in md and "numerical deviation" in md
    assert len((out / "leaderboard.csv").read_text().strip().splitlines()) == 5

    again = cli("+experiment=smoke")
    assert again.returncode == 0 and again.stdout.count("skip (already stored") == 4
    with sqlite3.connect(store_path) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4


@pytest.mark.timeout(300)  # ~20 s idle (two BF16 runs): 3x that busy, with a margin
def test_same_seed_bf16_runs_are_identical(cli, tmp_path):
    for _ in range(2):
        proc = cli("engine=bf16", "run.force=true", "workload.height=64", "workload.width=64")
        assert proc.returncode == 0, proc.stderr[-2000:]
    images = sorted((tmp_path / "outputs").rglob("image_p0_s0.png"))
    assert len(images) == 2 and images[0].read_bytes() == images[1].read_bytes()


@pytest.mark.timeout(420)  # ~37 s idle, 20 s of it the hang cell's timeout: 3x that busy, with a margin
def test_sweep_survives_crash_hang_oom_and_error(cli, tmp_path, store_path):
    proc = cli("-m", "engine=fault,bf16", "dtype=raise,segfault,hang,oom,unsupported,bf16", "run.timeout_s=20",
               "run.host_memory_limit_gib=6", "workload.height=64", "workload.width=64", "metrics.save_images=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(store_path) as db:
        rows = dict(db.execute("SELECT dtype, status FROM results").fetchall())
    assert rows == {"raise": "error", "segfault": "crashed", "hang": "timeout", "oom": "oom",
                    "unsupported": "unsupported", "bf16": "ok"}
    with sqlite3.connect(store_path) as db:
        errors = {d: json.loads(r)["error"] for d, r in db.execute("SELECT dtype, record FROM results")}
    assert errors["bf16"] is None
    assert {d: e["stage"] for d, e in errors.items() if e} == dict.fromkeys(
        ["raise", "segfault", "hang", "oom", "unsupported"], "load + quantize")  # the fault engine quantizes
    assert errors["hang"]["message"].startswith("cell exceeded its timeout of 20 s during load + quantize (for the")
    assert errors["segfault"]["message"].startswith("cell process killed by SIGSEGV during load + quantize")


@pytest.mark.parametrize("args, message", [
    (["engine=torchoa"], "Unknown engine 'torchoa'. Did you mean: torchao?"),
    (["model=flux-tinny"], "Unknown model 'flux-tinny'. Did you mean: flux-tiny"),
    (["dtype=nf4"], "does not support dtype 'nf4'. Supported: int8, int8dq, int4, float8, float8dq"),
    (["workload.steps=0"], "workload.steps must be at least 1"),
    (["model.path=/no/such/folder"], "does not exist"),
])
def test_bad_input_exits_nonzero_and_writes_nothing(cli, tmp_path, store_path, args, message):
    proc = cli(*args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not store_path.exists() and not _results(tmp_path)


def test_list_prints_engines_and_dtypes(cli):
    proc = cli("list")
    assert proc.returncode == 0
    assert "torchao" in proc.stdout and "int8dq" in proc.stdout and "flux-dev" in proc.stdout
