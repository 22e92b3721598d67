"""Leaderboards: one table per (model, device), as ``leaderboard.md`` and ``leaderboard.csv``.

Every table carries its provenance (`reports.provenance.summary`) and, for synthetic weights, the warning
that the quality columns are numerical deviation only. The LoRA column and the LoRA figures (retention,
speed with / without the LoRA, LoRA load time) appear in a section that has a cell with a LoRA. The noise-floor
columns (`reports.columns.FLOOR_FIGURES`) and their note appear in a section that has a cell with a floor. Columns are `reports.columns.TABLE` (markdown, ok
cells first, fastest first) and `reports.columns.FRAME` (CSV, every cell in the given order).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import columns, provenance, spread
from reports.records import groups


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per record, one column per `reports.columns.FRAME` entry."""
    return pd.DataFrame([{c.key: c.get(r) for c in columns.FRAME} for r in records],
                        columns=[c.key for c in columns.FRAME])


def markdown(records: list[dict], sort_by: str = "steps_per_s") -> str:
    """The leaderboard: per (model, device) its provenance, the table sorted ok first then by ``sort_by``
    (descending), and the failures with their messages."""
    lines = ["# Leaderboard", ""]
    if not records:
        lines.append("No results in the store yet.")
    headers = {c.key: c.label for c in columns.TABLE}
    for (model, device), part in groups(records).items():
        df = frame(part).sort_values(by=["status", sort_by], ascending=[True, False], key=_status_first)
        lines += [*provenance.section(model, device, part), ""]
        has_floor = df["vs_floor"].notna().any()
        shown = [k for k in headers if (not _lora_only(k) or (df["lora"] != "none").any())
                 and (not _floor_only(k) or has_floor)]
        table = df[shown].rename(columns=headers)
        table = table.astype(object).where(table.notna(), None)
        lines.append(table.to_markdown(index=False, floatfmt=".4g", missingval="-"))
        if has_floor:
            lines += ["", columns.FLOOR_NOTE]
        lines += spread.markdown(part)
        failures = df[df["status"] != "ok"]
        if not failures.empty:
            lines += ["", "Failures:", ""]
            lines += [f"- {r.engine}:{r.dtype} offload={r.offload} compile={r.compile}"
                      + (f" lora={r.lora}" if r.lora != "none" else "") + f": **{r.status}** {r.error or ''}"
                      for r in failures.itertuples()]
        lines.append("")
    return "\n".join(lines) + "\n"


def render(records: list[dict], out_dir: str | Path, sort_by: str = "steps_per_s") -> dict[str, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.csv`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    paths["markdown"].write_text(markdown(records, sort_by))
    frame(records).drop(columns=["versions"]).to_csv(paths["csv"], index=False)
    return paths


def _lora_only(key: str) -> bool:
    """A column that only a cell with a LoRA fills (`reports.columns.LORA` and `LORA_FIGURES`)."""
    return key == columns.LORA.key or key in {c.key for c in columns.LORA_FIGURES}


def _floor_only(key: str) -> bool:
    """A column that only a cell with a noise floor fills (`reports.columns.FLOOR_FIGURES`)."""
    return key in {c.key for c in columns.FLOOR_FIGURES}


def _status_first(col: pd.Series) -> pd.Series:
    if col.name == "status":
        return col.map(lambda s: 0 if s == "ok" else 1)
    return col
