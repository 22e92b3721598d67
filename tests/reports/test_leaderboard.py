"""The leaderboard: ok cells first by speed, failures listed, provenance, CSV columns."""
from reports import columns
from reports.leaderboard import render
from reports.provenance import SYNTHETIC_WARNING


def _record(engine, dtype, status, steps_per_s=None, psnr=None, error=None, model="flux-dev"):
    return {"model": model, "engine": engine, "dtype": dtype, "mode": "post", "offload": "none", "compile": "none",
            "status": status, "created": "2026-11-21T00:00:00",
            "metrics": {"weight_gib": 11.1, "steps_per_s": steps_per_s, "memory_kind": "cuda"},
            "quality": {"psnr_db": psnr, "synthetic_weights": True},
            "error": {"message": error} if error else None,
            "workload": {"steps": 8, "width": 1024, "height": 1024},
            "env": {"device_name": "NVIDIA H200", "versions": {"torch": "2.11.0"}, "git_sha": "abc"}}


def test_leaderboard_sorts_ok_first_by_speed_and_lists_failures(tmp_path):
    records = [_record("bf16", "bf16", "ok", 5.8), _record("torchao", "int8", "ok", 4.2, 40.1),
               _record("torchao", "int4", "error", error="boom"), _record("bnb", "nf4", "oom"),
               _record("torchao", "int8", "ok", 2.0, 39.0, model="sdxl")]
    paths = render(records, tmp_path)
    md = paths["markdown"].read_text()
    assert "## flux-dev on NVIDIA H200" in md and "## sdxl on NVIDIA H200" in md
    assert SYNTHETIC_WARNING in md and "torch 2.11.0" in md
    flux = md.split("## sdxl")[0]
    assert flux.index("| bf16") < flux.index("| torchao  | int8") < flux.index("| torchao  | int4")
    assert "**error** boom" in md and "**oom**" in md
    csv = paths["csv"].read_text().splitlines()
    assert len(csv) == 6 and csv[0].startswith("model,device_name,engine")


def test_empty_store_renders_a_note(tmp_path):
    assert "No results" in render([], tmp_path)["markdown"].read_text()


def test_csv_has_one_column_per_frame_column_in_order(tmp_path):
    paths = render([_record("bf16", "bf16", "ok", 5.8)], tmp_path)
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header == [c.key for c in columns.FRAME if c.key != "versions"]
    assert "1024x1024" in paths["csv"].read_text()  # the derived resolution column


def test_table_headers_are_the_column_labels(tmp_path):
    md = render([_record("bf16", "bf16", "ok", 5.8)], tmp_path)["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| engine"))
    lora_only = {columns.LORA.key, *(c.key for c in columns.LORA_FIGURES)}  # shown where a cell has a LoRA
    lora_only |= {c.key for c in columns.FLOOR_FIGURES}  # and where a cell has a noise floor
    assert [h.strip() for h in header.strip("|").split("|")] == [c.label for c in columns.TABLE
                                                                  if c.key not in lora_only]
