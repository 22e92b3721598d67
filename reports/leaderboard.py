"""Leaderboards: one table per (model, device) from the result store, as markdown and CSV.

Every table carries its provenance (device, library versions, workload, synthetic or real weights)
and, for synthetic weights, the warning that quality columns are numerical deviation only.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.store import ResultStore

COLUMNS = {
    "engine": "engine", "dtype": "dtype", "mode": "mode", "offload": "offload", "compile": "compile",
    "status": "status",
    "weight_gib": "weights GiB", "mem_after_load_gib": "mem after load GiB", "peak_mem_gib": "peak GiB",
    "peak_reserved_gib": "peak reserved GiB", "steps_per_s": "steps/s", "s_per_image": "s/image",
    "first_call_s": "first call s", "load_s": "load s",
    "psnr_db": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "lpips": "LPIPS", "clip_score": "CLIP",
}
SYNTHETIC_WARNING = ("Synthetic random weights: the quality columns (PSNR, SSIM, MS-SSIM) measure numerical "
                     "deviation from the BF16 output of the same model, not image quality.")


def frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        m, q, env = r.get("metrics") or {}, r.get("quality") or {}, r.get("env") or {}
        rows.append({
            "model": r["model"], "device_name": env.get("device_name") or "unknown",
            "engine": r["engine"], "dtype": r["dtype"], "mode": r.get("mode"), "offload": r["offload"],
            "compile": r["compile"], "status": r["status"],
            **{k: m.get(k) for k in ("weight_gib", "mem_after_load_gib", "peak_mem_gib", "peak_reserved_gib",
                                     "steps_per_s", "s_per_image", "first_call_s", "load_s")},
            **{k: q.get(k) for k in ("psnr_db", "ssim", "ms_ssim", "lpips", "clip_score")},
            "memory_kind": m.get("memory_kind"), "synthetic": q.get("synthetic_weights"),
            "error": (r.get("error") or {}).get("message"),
            "steps": (r.get("workload") or {}).get("steps"),
            "resolution": f"{(r.get('workload') or {}).get('width')}x{(r.get('workload') or {}).get('height')}",
            "versions": env.get("versions") or {}, "git_sha": env.get("git_sha"), "created": r.get("created"),
        })
    return pd.DataFrame(rows)


def _provenance(group: pd.DataFrame, model: str, device: str) -> list[str]:
    versions: dict[str, set] = {}
    for v in group["versions"]:
        for k, val in v.items():
            if val:
                versions.setdefault(k, set()).add(val)
    lines = [f"## {model} on {device}", "",
             f"- device: {device}; memory columns are "
             f"{'GPU (torch.cuda allocated/reserved)' if (group['memory_kind'] == 'cuda').all() else 'host RSS where no GPU'}",
             f"- workload: {', '.join(sorted(set(group['resolution'])))} px, {', '.join(map(str, sorted(set(group['steps']))))} steps",
             "- versions: " + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items())),
             f"- harness: {', '.join(sorted({str(s) for s in group['git_sha'] if s}))}",
             f"- results: {len(group)} cells, measured {min(group['created'])} .. {max(group['created'])}"]
    if group["synthetic"].fillna(False).astype(bool).any():
        lines.append(f"- **{SYNTHETIC_WARNING}**")
    return lines + [""]


def render(records: list[dict], out_dir: str | Path, sort_by: str = "steps_per_s") -> dict[str, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.csv`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = frame(records)
    md_lines = ["# Leaderboard", ""]
    if df.empty:
        md_lines.append("No results in the store yet.")
    groups = df.groupby(["model", "device_name"], sort=True) if not df.empty else []
    for (model, device), group in groups:
        group = group.sort_values(by=["status", sort_by], ascending=[True, False], key=_status_first)
        md_lines += _provenance(group, model, device)
        table = group[list(COLUMNS)].rename(columns=COLUMNS)
        table = table.astype(object).where(table.notna(), None)
        md_lines.append(table.to_markdown(index=False, floatfmt=".4g", missingval="-"))
        failures = group[group["status"] != "ok"]
        if not failures.empty:
            md_lines += ["", "Failures:", ""]
            md_lines += [f"- {r.engine}:{r.dtype} offload={r.offload} compile={r.compile}: **{r.status}** {r.error or ''}"
                         for r in failures.itertuples()]
        md_lines.append("")
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    paths["markdown"].write_text("\n".join(md_lines) + "\n")
    csv = df.drop(columns=["versions"]) if not df.empty else df
    csv.to_csv(paths["csv"], index=False)
    return paths


def _status_first(col: pd.Series) -> pd.Series:
    if col.name == "status":
        return col.map(lambda s: 0 if s == "ok" else 1)
    return col


def from_store(store_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    path = Path(store_path)
    if not path.is_file():
        raise FileNotFoundError(f"no result store at {path} (run a cell first, or pass --store)")
    return render(list(ResultStore(path).records()), out_dir)
