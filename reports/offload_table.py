"""The offload table: for each model x engine:dtype x GPU memory cap, every offload mode's status, seconds per
step and peak GPU memory side by side, and how balanced offload compares with the others.

Balanced offload's targets: peak under the cap; at least 3x faster than ``sequential``; at least
as fast as ``model`` where that fits, else as ``group``. The verdict columns say whether the measured cells
meet them; a comparison whose cells did not all run says so instead. "As fast" allows `SPREAD` (1%): each
cell times one image, and cells with identical placements measured up to 0.7% apart on the H200 (SDNQ int8
whole-resident under balanced offload: 0.2174 vs 0.2190 s/step).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from reports import provenance
from reports.records import device_of, groups, newest

MODES = ("balanced", "model", "group", "group+stream", "sequential", "none")
INTRO = ("Seconds per denoising step (median), peak GPU memory allocated, status; `cap` is the simulated GPU size "
         "(`run.gpu_memory_gib` / `run.gpu_memory_fraction`). Targets for balanced offload: peak under the cap, "
         ">= 3x faster than sequential, at least as fast as model offload where it fits, else as group offload "
         "(the faster of its two settings, without and with CUDA streams).")


def mode_of(record: dict) -> str:
    """The offload mode, with ``+stream`` for group offload on CUDA streams (a separate column)."""
    mode = record.get("offload") or "none"
    if mode == "group" and (record.get("offload_report") or {}).get("use_stream"):
        return "group+stream"
    return mode


def cap_gib(record: dict) -> float | None:
    """The GPU memory cap the cell ran under (GiB), or None when uncapped."""
    env = record.get("env") or {}
    if env.get("gpu_cap_gib"):
        return round(float(env["gpu_cap_gib"]), 1)
    run = (record.get("config") or {}).get("run") or {}
    if run.get("gpu_memory_gib"):
        return round(float(run["gpu_memory_gib"]), 1)
    if run.get("gpu_memory_fraction") and env.get("gpu_total_gib"):
        return round(float(run["gpu_memory_fraction"]) * float(env["gpu_total_gib"]), 1)
    return None


def _key(r: dict) -> tuple:
    return (r.get("model"), device_of(r), r.get("engine"), r.get("dtype"), r.get("compile"), cap_gib(r), mode_of(r))


def _s_per_step(record: dict) -> float | None:
    sps = (record.get("metrics") or {}).get("steps_per_s")
    return 1.0 / sps if record.get("status") == "ok" and sps else None


def comparison(records: list[dict]) -> pd.DataFrame:
    """One row per model x device x engine:dtype x compile x cap with each mode's figures and the verdicts."""
    cells = newest(records, _key)
    rows: dict[tuple, dict] = {}
    for (model, device, engine, dtype, comp, cap, mode), r in cells.items():
        row = rows.setdefault((model, device, engine, dtype, comp, cap), {
            "model": model, "device": device, "engine:dtype": f"{engine}:{dtype}", "compile": comp,
            "cap GiB": cap if cap is not None else "card"})
        m = r.get("metrics") or {}
        row[f"{mode} status"] = r.get("status")
        row[f"{mode} s/step"] = _s_per_step(r)
        row[f"{mode} peak GiB"] = m.get("peak_mem_gib") if r.get("status") == "ok" else None
        if mode == "balanced":
            rep = r.get("offload_report") or {}
            row["balanced resident GiB"] = rep.get("resident_gib")
            row["balanced GiB moved"] = rep.get("gib_moved")
    out = [dict(row, **_verdicts(row)) for row in rows.values()]
    return pd.DataFrame(out)


#: Slower by at most this fraction still counts as "as fast" (run-to-run spread; see the module docstring).
SPREAD = 0.01


def _verdicts(row: dict) -> dict:
    """Balanced offload against the targets (module docstring) for one `comparison` row."""
    bal = row.get("balanced s/step")
    seq, mod = row.get("sequential s/step"), row.get("model s/step")
    group_runs = [v for v in (row.get("group s/step"), row.get("group+stream s/step")) if v]
    grp = min(group_runs) if group_runs else None
    out: dict = {}
    cap = row.get("cap GiB")
    peak = row.get("balanced peak GiB")
    out["balanced under cap"] = (None if peak is None or not isinstance(cap, float) else bool(peak < cap))
    out["x vs sequential"] = round(seq / bal, 2) if bal and seq else None
    if bal and mod:
        out["x vs model"], out["vs"] = round(mod / bal, 2), "model"
    elif bal and grp:
        out["x vs model"], out["vs"] = None, "group"
    out["x vs group"] = round(grp / bal, 2) if bal and grp else None
    if not any(row.get(f"{m} status") for m in MODES if m != "none"):
        out["targets met"] = "reference: no offload, no cap"
    elif not bal:
        out["targets met"] = "balanced did not run" if row.get("balanced status") is None else \
            f"balanced: {row.get('balanced status')}"
    elif not seq:
        out["targets met"] = "no sequential figure"
    else:
        fair = mod if mod else grp
        met = (out["x vs sequential"] >= 3 and (fair is None or bal <= fair * (1 + SPREAD))
               and out["balanced under cap"] is not False)
        out["targets met"] = "yes" if met else "no"
    return out


def markdown(records: list[dict]) -> str:
    """``offload.md``: per model x device its provenance and the comparison table."""
    df = comparison(records)
    lines = ["# Offload modes side by side", "", INTRO, ""]
    if df.empty:
        return "\n".join(lines + ["No results."]) + "\n"
    by_group = groups(records)
    for (model, device), part in df.groupby(["model", "device"], sort=True):
        lines += [*provenance.section(model, device, by_group.get((model, device), [])), "", _table(part), ""]
    return "\n".join(lines) + "\n"


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(part: pd.DataFrame) -> str:
    modes = [m for m in MODES if m not in ("none", "group+stream") or f"{m} status" in part.columns]
    head = ["engine:dtype", "compile", "cap GiB"] + [f"{m}: s/step, peak GiB" for m in modes] + \
        ["balanced x vs sequential", "x vs model", "x vs group (best)", "targets met"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in part.sort_values(["engine:dtype", "cap GiB"], key=lambda c: c.astype(str)).iterrows():
        cells = [row["engine:dtype"], row["compile"], _fmt(row["cap GiB"], 1)]
        for m in modes:
            status = row.get(f"{m} status") if f"{m} status" in row else None
            if status is None or (isinstance(status, float) and pd.isna(status)):
                cells.append("not run")
            elif status != "ok":
                cells.append(str(status))
            else:
                cells.append(f"{_fmt(row[f'{m} s/step'])} s, {_fmt(row[f'{m} peak GiB'], 2)}")
        cells += [_fmt(row.get("x vs sequential"), 2), _fmt(row.get("x vs model"), 2), _fmt(row.get("x vs group"), 2),
                  _fmt(row.get("targets met"))]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def has_offload(records: list[dict]) -> bool:
    """Whether any record ran with an offload mode (the table is only rendered then)."""
    return any(r.get("offload") not in (None, "none") for r in records)


def to_html(records: list[dict]) -> str:
    """The comparison as an HTML fragment: one sortable table (class ``sortable``, numbers in ``data-sort``)."""
    df = comparison(records)
    e = html.escape
    if df.empty:
        return "<p>No results.</p>"
    modes = [m for m in MODES if m not in ("none", "group+stream") or f"{m} status" in df.columns]
    head = ["model", "device", "engine:dtype", "compile", "cap GiB"] + [f"{m}: s/step (peak GiB)" for m in modes] \
        + ["balanced x vs sequential", "x vs model", "x vs group (best)", "targets met"]
    text_cols = {"model", "device", "engine:dtype", "compile", "targets met"}
    rows = []
    for _, row in df.iterrows():
        cells = [f"<td class=\"text\">{e(str(row[k]))}</td>" for k in ("model", "device", "engine:dtype", "compile")]
        cells.append(_num_cell(row["cap GiB"], 1))
        for m in modes:
            status = row.get(f"{m} status") if f"{m} status" in row else None
            sps = row.get(f"{m} s/step") if f"{m} s/step" in row else None
            if not isinstance(status, str):
                cells.append("<td data-sort=\"\">not run</td>")
            elif status != "ok":
                cells.append(f"<td data-sort=\"\" class=\"status-bad\">{e(status)}</td>")
            else:
                cells.append(f"<td data-sort=\"{sps!r}\">{sps:.3f} ({row[f'{m} peak GiB']:.2f})</td>")
        cells += [_num_cell(row.get(k), 2) for k in ("x vs sequential", "x vs model", "x vs group")]
        cells.append(f"<td class=\"text\">{e(_fmt(row.get('targets met')))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ths = "".join(f"<th class=\"{'text' if h in text_cols else 'num'}\">{e(h)}</th>" for h in head)
    return (f"<p class=\"note\">{e(INTRO)}</p><div class=\"scroll\"><table class=\"sortable offload\">"
            f"<thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _num_cell(value, digits: int) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"<td data-sort=\"{value!r}\">{value:.{digits}f}</td>"
    return f"<td data-sort=\"\">{html.escape(str(value)) if isinstance(value, str) else '-'}</td>"


def render(records: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write ``offload.md`` and ``offload.csv`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "offload.md", out / "offload.csv"
    md.write_text(markdown(records))
    comparison(records).to_csv(csv, index=False)
    return {"offload_md": md, "offload_csv": csv}
