"""The LoRA table: one row per cell with a LoRA, figures with and without it, reasons of cells that did not run."""
import pandas as pd

from reports import lora_table
from reports.cli import main
from tests.reports import samples


def _lora_cell(engine, dtype, rank, status="ok", cosine=None, reason=None):
    r = samples.record(engine, dtype, status, steps_per_s=4.5 if status == "ok" else None,
                       peak=18.1 if status == "ok" else None)
    r["cell_key"] += f"-lora{rank}"
    r["lora"] = "synthetic"
    r["config"] = {"lora": {"name": "synthetic", "options": {"rank": rank}}}
    if status == "ok":
        r["lora_report"] = {"how": "adapter", "retention_cosine": cosine, "retention_magnitude": 0.94,
                            "retention_psnr_db": 30.66, "steps_per_s_without": 5.41, "speed_ratio": 0.871,
                            "load_s": 1.19, "peak_mem_gib_without": 18.0, "unload_exact": True}
    else:
        r["error"] = {"type": "Unsupported", "reason": reason}
    return r


def _records():
    return [samples.record("bf16", "bf16", steps_per_s=5.7, peak=33.9),
            _lora_cell("bnb", "nf4", 16, cosine=0.7543),
            _lora_cell("nncf", "int8_sym", 64, "unsupported", reason="NNCF hooks | each weight by path")]


def test_only_cells_with_a_lora_get_a_row_with_both_figures():
    df = lora_table.frame(_records())
    assert list(df["engine_dtype"]) == ["bnb:nf4", "nncf:int8_sym"]
    assert list(df["lora"]) == ["synthetic r16", "synthetic r64"]
    ok = df.iloc[0]
    assert ok["retention_cosine"] == 0.7543 and ok["steps_per_s"] == 4.5 and ok["steps_per_s_without"] == 5.41
    assert ok["peak_mem_gib"] == 18.1 and ok["peak_mem_gib_without"] == 18.0 and ok["unload_exact"]
    assert pd.isna(df.iloc[1]["retention_cosine"]) and df.iloc[1]["status"] == "unsupported"


def test_markdown_rows_carry_figures_and_reasons_without_breaking_the_table():
    text = lora_table.markdown(_records())
    assert "## flux-dev on NVIDIA H200" in text and "synthetic (random) weights" in text
    row = next(line for line in text.splitlines() if line.startswith("| bnb:nf4"))
    assert "| 0.7543 |" in row and "| 4.5 | 5.41 | 0.871 |" in row and "| 18.1 | 18 | True |" in row
    bad = next(line for line in text.splitlines() if line.startswith("| nncf:int8_sym"))
    assert bad.count("|") == len(lora_table.COLUMNS) + 1 and "NNCF hooks / each weight by path" in bad
    assert lora_table.markdown([samples.record("bf16", "bf16")]).rstrip().endswith("No cell with a LoRA.")


def test_all_writes_the_lora_table_only_for_a_store_with_lora_cells(tmp_path):
    with_lora = samples.store(tmp_path / "a.sqlite", _records())
    without = samples.store(tmp_path / "b.sqlite", _records()[:1])
    assert main(["--store", with_lora, "--out", str(tmp_path / "a"), "--no-images"]) == 0
    assert main(["--store", without, "--out", str(tmp_path / "b"), "--no-images"]) == 0
    assert (tmp_path / "a" / "lora.md").is_file() and (tmp_path / "a" / "lora.csv").is_file()
    assert not (tmp_path / "b" / "lora.md").exists()
    assert lora_table.has_lora(_records()) and not lora_table.has_lora(_records()[:1])
