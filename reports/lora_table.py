"""The LoRA table: every cell with a LoRA, per model x device, with what the LoRA cost and what of it survived.

Retention compares the LoRA's effect on the quantized model with the same LoRA's effect on BF16
(`harness.lora`); speed and peak memory are shown with the LoRA and, in brackets, without it in the same cell;
"unload exact" says whether unloading restored the denoiser bit for bit. A cell that did not run shows its
status and reason. On synthetic weights with a synthetic LoRA every figure here is numerical, not visual.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import provenance
from reports.columns import Column, lora_label
from reports.records import groups

INTRO = ("Retention: the LoRA's effect on the quantized model against the same LoRA on BF16 (cosine, magnitude "
         "ratio, PSNR of the two effects); speed x: steps/s with the LoRA over steps/s without it in the same "
         "cell; figures in brackets are the same cell without the LoRA.")

COLUMNS: tuple[Column, ...] = (
    Column("engine_dtype", "engine:dtype", "engine", derive=lambda r: f"{r['engine']}:{r['dtype']}"),
    Column("lora", "LoRA", "lora", derive=lora_label),
    Column("status", "status", "status"),
    Column("how", "how", "lora_report.how"),
    Column("retention_cosine", "retention cos", "lora_report.retention_cosine", ".4f"),
    Column("retention_magnitude", "magnitude", "lora_report.retention_magnitude", ".3f"),
    Column("retention_psnr_db", "retention PSNR dB", "lora_report.retention_psnr_db", ".2f"),
    Column("steps_per_s", "steps/s", "metrics.steps_per_s", ".3g"),
    Column("steps_per_s_without", "(without)", "lora_report.steps_per_s_without", ".3g"),
    Column("speed_ratio", "speed x", "lora_report.speed_ratio", ".3g"),
    Column("load_s", "LoRA load s", "lora_report.load_s", ".3g"),
    Column("peak_mem_gib", "peak GiB", "metrics.peak_mem_gib", ".3g"),
    Column("peak_mem_gib_without", "(without)", "lora_report.peak_mem_gib_without", ".3g"),
    Column("unload_exact", "unload exact", "lora_report.unload_exact"),
    Column("reason", "reason / error", "error", derive=lambda r: _reason(r.get("error") or {})),
)


def _reason(error: dict) -> str:
    return error.get("reason") or error.get("message") or ""


def _with_lora(record: dict) -> bool:
    return (record.get("lora") or "none") != "none"


def has_lora(records: list[dict]) -> bool:
    """Whether any record is a cell with a LoRA."""
    return any(_with_lora(r) for r in records)


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per cell with a LoRA: model, device, then `COLUMNS` (raw values)."""
    rows = []
    for (model, device), part in sorted(groups(records).items()):
        for r in part:
            if _with_lora(r):
                rows.append({"model": model, "device": device, **{c.key: c.get(r) for c in COLUMNS}})
    return pd.DataFrame(rows, columns=["model", "device", *(c.key for c in COLUMNS)])


def _cell(column: Column, value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if column.fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, column.fmt)
    return str(value).replace("|", "/").replace("\n", " ")[:240] or "-"


def markdown(records: list[dict]) -> str:
    """``lora.md``: per model x device its provenance and the table of its LoRA cells."""
    df = frame(records)
    lines = ["# LoRA cells", "", INTRO, ""]
    if df.empty:
        return "\n".join(lines + ["No cell with a LoRA."]) + "\n"
    by_group = groups(records)
    for (model, device), part in df.groupby(["model", "device"], sort=True):
        lines += [*provenance.section(model, device, by_group.get((model, device), [])), "",
                  "| " + " | ".join(c.label for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for _, row in part.sort_values(["engine_dtype", "lora"], key=lambda s: s.astype(str)).iterrows():
            lines.append("| " + " | ".join(_cell(c, row[c.key]) for c in COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def render(records: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write ``lora.md`` and ``lora.csv`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "lora.md", out / "lora.csv"
    md.write_text(markdown(records))
    frame(records).to_csv(csv, index=False)
    return {"lora_md": md, "lora_csv": csv}
