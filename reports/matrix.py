"""The incompatibility error matrix, built from stored result records only (never written by hand).

One cell per engine x dtype x offload x compile (per model and device) with its status and, for a
failure, the exception type and the first line of its message. Identical errors are grouped by their
normalized message (`harness.status.normalize_message`) and listed once with every combination that
hits them. Known upstream reports (``reports/known_issues.yaml``) are matched against the cells, and the
report marks where reality disagrees: a known failure that no longer reproduces, one that fails
differently, or a combination documented to work that fails here.

    python -m reports.matrix --store results/results.sqlite --out reports/out
"""
from __future__ import annotations

import argparse
import fnmatch
import html
import os
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import yaml

from reports.provenance import newest

KNOWN_ISSUES = Path(__file__).with_name("known_issues.yaml")
OFFLOAD_ORDER = ("none", "model", "sequential", "group", "balanced")
COMPILE_ORDER = ("none", "default", "max-autotune", "regional")
FAILURES = ("error", "oom", "timeout", "crashed")
#: verdict -> (mark in a matrix cell, whether it is news: reality disagrees with the annotation)
VERDICTS = {
    "reproduces": ("✓", False),
    "works as documented": ("✓", False),
    "no longer reproduces": ("✗", True),
    "fails differently": ("~", True),
    "fails, documented to work": ("✗", True),
    "untested here": ("?", False),
}
CELL_KEYS = ("model", "device", "engine", "dtype", "mode", "offload", "compile")


# -- known issues ---------------------------------------------------------------------------------
def load_known_issues(path: str | Path | None = None) -> list[dict]:
    """The annotations, each with an ``id`` (``K1``, ``K2``, ... in file order unless it names one)."""
    entries = yaml.safe_load(Path(path or KNOWN_ISSUES).read_text()) or []
    out = []
    for i, entry in enumerate(entries, 1):
        if "engine" not in entry or "expect" not in entry or "source" not in entry:
            raise ValueError(f"known issue #{i} needs engine, expect and source: {entry}")
        out.append({"key": f"K{i}", **entry})
    return out


def _matches(pattern, value) -> bool:
    patterns = pattern if isinstance(pattern, list) else [pattern]
    return any(fnmatch.fnmatchcase(str(value), str(p)) for p in patterns)


def applies(issue: dict, cell: dict) -> bool:
    """Whether annotation ``issue`` concerns ``cell`` (a row of `matrix_frame`)."""
    if issue.get("when"):
        return False  # a condition the matrix does not sweep
    return all(_matches(issue.get(k, "*"), cell[k]) for k in ("engine", "dtype", "offload", "compile", "model"))


def verdict(issue: dict, cell: dict) -> str:
    """What the measured ``cell`` says about annotation ``issue`` (one of `VERDICTS`)."""
    expected = issue["expect"].get("status", "failure")
    substring = issue["expect"].get("message")
    status = cell["status"]
    if expected == "ok":
        if status == "ok":
            return "works as documented"
        return "untested here" if status == "unsupported" else "fails, documented to work"
    if status == "ok":
        return "no longer reproduces"
    if status == "unsupported" and expected != "unsupported":
        return "untested here"
    status_ok = status in FAILURES if expected == "failure" else status == expected
    message_ok = not substring or substring.lower() in (cell.get("message") or "").lower()
    return "reproduces" if status_ok and message_ok else "fails differently"


# -- frames -----------------------------------------------------------------------------------------
def _latest(records: list[dict]) -> list[dict]:
    """One record per cell: the newest."""
    return list(newest(records, _key).values())


def _device(record: dict) -> str:
    return (record.get("env") or {}).get("device_name") or "unknown"


def _key(record: dict) -> tuple:
    return (record.get("model"), _device(record), record.get("engine"), record.get("dtype"),
            record.get("mode") or "post", record.get("offload"), record.get("compile"))


def matrix_frame(records: list[dict], known: list[dict] | None = None) -> pd.DataFrame:
    """One row per model x device x engine x dtype x mode x offload x compile (newest record of each):
    status, exception type, first line of the message, its normalized form, the stage the cell was in when
    it failed (records from before stages were recorded have none), its error group (``E1``...) and the
    known issues that concern it with their verdicts."""
    known = load_known_issues() if known is None else known
    rows = []
    for r in _latest(records):
        err = r.get("error") or {}
        rows.append({"model": r.get("model"), "device": _device(r), "engine": r.get("engine"),
                     "dtype": r.get("dtype"), "mode": r.get("mode") or "post", "offload": r.get("offload"),
                     "compile": r.get("compile"), "status": r.get("status"),
                     "error_type": err.get("type"), "message": err.get("message"),
                     "normalized": err.get("normalized") or _normalize(err.get("message")),
                     "stage": err.get("stage"), "created": r.get("created")})
    columns = [*CELL_KEYS, "status", "error_type", "message", "normalized", "stage", "error_group",
               "known_issues", "verdicts", "disagrees", "created"]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    groups = _group_ids(df)
    df["error_group"] = [groups.get(_group_key(row)) for row in df.to_dict("records")]
    marks = [[(k, verdict(k, row)) for k in known if applies(k, row)] for row in df.to_dict("records")]
    df["known_issues"] = [";".join(k["key"] for k, _ in m) or None for m in marks]
    df["verdicts"] = [";".join(f"{k['key']}: {v}" for k, v in m) or None for m in marks]
    df["disagrees"] = [any(VERDICTS[v][1] for _, v in m) for m in marks]
    df = df.sort_values(["model", "device", "engine", "dtype", "mode", "offload", "compile"],
                        key=_order).reset_index(drop=True)[columns]
    return df.astype(object).where(df.notna(), None)  # missing values are None, not NaN


def _normalize(message: str | None) -> str | None:
    from harness.status import normalize_message

    return normalize_message(message) if message else None


def _order(col: pd.Series) -> pd.Series:
    if col.name == "offload":
        return col.map(lambda v: (OFFLOAD_ORDER.index(v) if v in OFFLOAD_ORDER else len(OFFLOAD_ORDER), v))
    if col.name == "compile":
        return col.map(lambda v: (COMPILE_ORDER.index(v) if v in COMPILE_ORDER else len(COMPILE_ORDER), v))
    if col.name == "engine":  # the reference first
        return col.map(lambda v: (v != "bf16", v))
    return col


def _group_key(row: dict) -> tuple | None:
    if row["status"] == "ok":
        return None
    return (row["status"], row["error_type"] or "", row["normalized"] or "")


def _group_ids(df: pd.DataFrame) -> dict[tuple, str]:
    """Group key -> ``E1``, ``E2``, ... (failures by number of cells, then unsupported reasons ``U1``...)."""
    counts: dict[tuple, int] = defaultdict(int)
    for row in df.to_dict("records"):
        key = _group_key(row)
        if key:
            counts[key] += 1
    ordered = sorted(counts, key=lambda k: (k[0] == "unsupported", -counts[k], k))
    ids, n_fail, n_unsup = {}, 0, 0
    for key in ordered:
        if key[0] == "unsupported":
            n_unsup += 1
            ids[key] = f"U{n_unsup}"
        else:
            n_fail += 1
            ids[key] = f"E{n_fail}"
    return ids


def label(row: dict) -> str:
    """``engine:dtype`` (+ ``pre``) ``offload=... compile=...``: one combination, as the report names it."""
    mode = " pre" if row.get("mode") == "pre" else ""
    return f"{row['engine']}:{row['dtype']}{mode} offload={row['offload']} compile={row['compile']}"


def error_groups(records: list[dict], known: list[dict] | None = None) -> list[dict]:
    """Identical failures listed once: ``{id, status, type, message (an example first line), normalized,
    count, cells: [labels], stages: [each cell's stage or None], known: [issue keys]}``; failures first
    (most cells first), then unsupported."""
    df = matrix_frame(records, known)
    out: dict[str, dict] = {}
    for row in df.to_dict("records"):
        gid = row["error_group"]
        if not gid:
            continue
        group = out.setdefault(gid, {"id": gid, "status": row["status"], "type": row["error_type"],
                                     "message": row["message"], "normalized": row["normalized"], "count": 0,
                                     "cells": [], "stages": [], "models": set(), "known": set()})
        group["count"] += 1
        group["cells"].append(label(row))
        group["stages"].append(row["stage"])
        group["models"].add(f"{row['model']} on {row['device']}")
        group["known"].update(k for k in (row["known_issues"] or "").split(";") if k)
    groups = sorted(out.values(), key=lambda g: (g["id"][0] == "U", int(g["id"][1:])))
    for g in groups:
        g["models"], g["known"] = sorted(g["models"]), sorted(g["known"])
    return groups


# -- provenance -------------------------------------------------------------------------------------
def provenance(records: list[dict]) -> list[tuple[str, str]]:
    """What these records were measured on, as (label, text) pairs."""
    envs = [r.get("env") or {} for r in records]
    work = [r.get("workload") or {} for r in records]
    versions: dict[str, set] = defaultdict(set)
    for env in envs:
        for pkg, v in (env.get("versions") or {}).items():
            if v and v != "not installed":
                versions[pkg].add(str(v))

    def values(items, fmt=str):
        return ", ".join(sorted({fmt(i) for i in items if i is not None and i != ""})) or "unknown"

    created = sorted(str(r["created"]) for r in records if r.get("created"))
    by_fraction: dict = {}  # fraction of the card -> GiB (None until a record that knew it is seen)
    gib_only: set = set()   # caps given in GiB (run.gpu_memory_gib)
    for r in records:
        fraction = ((r.get("config") or {}).get("run") or {}).get("gpu_memory_fraction")
        gib = (r.get("env") or {}).get("gpu_cap_gib")
        if fraction is not None:
            by_fraction[fraction] = by_fraction.get(fraction) or gib
        elif gib is not None:
            gib_only.add(gib)
    info = [
        ("device", values(_device(r) for r in records)),
        ("driver / CUDA", f"{values(e.get('driver') for e in envs)} / {values(e.get('cuda') for e in envs)}"),
        ("versions", ", ".join(f"{p} {'/'.join(sorted(v))}" for p, v in sorted(versions.items())) or "unknown"),
        ("workload", f"{values(((w.get('width'), w.get('height')) for w in work if w.get('width')), _resolution)} px, "
                     f"{values(w.get('steps') for w in work)} steps: a small workload, this matrix answers "
                     "*does it run*; its timings are not benchmarks"),
        ("harness", values(e.get("git_sha") for e in envs)),
        ("cells", f"{len(records)}, measured {created[0] if created else '?'} .. {created[-1] if created else '?'}"),
    ]
    if by_fraction or gib_only:
        text = ", ".join([f"{f:g} of the card" + (f" = {g:g} GiB" if g else "") for f, g in sorted(by_fraction.items())]
                         + [f"{g:g} GiB" for g in sorted(gib_only)])
        info.append(("GPU memory cap", text + " per cell (cells may share a GPU; a cap keeps them apart)"))
    if any((r.get("quality") or {}).get("synthetic_weights") for r in records):
        info.append(("weights", "synthetic (random): statuses are real, quality is not measured here"))
    return info


def _resolution(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


# -- rendering --------------------------------------------------------------------------------------
def _cell_text(row: dict) -> str:
    text = row["status"]
    if row["error_group"]:
        text += f" {row['error_group']}"
    if row["verdicts"]:
        marks = []
        for part in row["verdicts"].split(";"):
            key, v = part.split(": ", 1)
            marks.append(f"{key}{VERDICTS[v][0]}")
        text += " [" + " ".join(marks) + "]"
    return text


def _pivots(df: pd.DataFrame):
    """(model, device, compile, table) with rows ``engine:dtype`` and one column per offload mode."""
    for (model, device), group in df.groupby(["model", "device"], sort=True):
        for comp in sorted(group["compile"].unique(), key=lambda c: (COMPILE_ORDER.index(c)
                                                                     if c in COMPILE_ORDER else 99, c)):
            part = group[group["compile"] == comp]
            offloads = sorted(part["offload"].unique(), key=lambda o: (OFFLOAD_ORDER.index(o)
                                                                       if o in OFFLOAD_ORDER else 99, o))
            rows: dict[str, dict] = {}
            for row in part.to_dict("records"):
                name = f"{row['engine']}:{row['dtype']}" + (" pre" if row["mode"] == "pre" else "")
                rows.setdefault(name, {})[row["offload"]] = row
            yield model, device, comp, offloads, rows


def _summary(df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("ok", "unsupported", *FAILURES) if s in counts)


def markdown(records: list[dict], known: list[dict] | None = None) -> str:
    known = load_known_issues() if known is None else known
    df = matrix_frame(records, known)
    lines = ["# Error matrix", ""]
    if df.empty:
        return "\n".join(lines + ["No results in the store yet.", ""])
    lines += ["Built from stored results only. Cell: status, its error group (`E`: failures, `U`: declared "
              "unsupported) and the known upstream reports that concern it: ✓ agrees, ✗ disagrees "
              "(news), ~ fails differently, ? untested here.", ""]
    latest = _latest(records)
    for model, device in sorted({(r.get("model"), _device(r)) for r in latest}):
        part = [r for r in latest if r.get("model") == model and _device(r) == device]
        sub = df[(df["model"] == model) & (df["device"] == device)]
        lines += [f"## {model} on {device}", ""]
        lines += [f"- {k}: {v}" for k, v in provenance(part)]
        lines += [f"- result: {_summary(sub)}", ""]
        for _, _, comp, offloads, rows in _pivots(sub):
            header = " | ".join(f"offload={o}" for o in offloads)
            lines += [f"### compile={comp}", "", f"| engine:dtype | {header} |", "|---|" + "---|" * len(offloads)]
            for name, cells in rows.items():
                lines.append(f"| {name} | " + " | ".join(_cell_text(cells[o]) if o in cells else "-"
                                                           for o in offloads) + " |")
            lines.append("")
    news = df[df["disagrees"]]
    lines += ["## Where reality disagrees with the known reports", ""]
    if news.empty:
        lines += ["Nothing: every known report that the matrix covers agrees with it.", ""]
    else:
        for row in news.to_dict("records"):
            why = "; ".join(p for p in row["verdicts"].split(";") if VERDICTS[p.split(": ", 1)[1]][1])
            what = row["status"] + (f" ({row['error_type']}: {row['message']})" if row["message"] else "")
            lines.append(f"- {label(row)} ({row['model']}, {row['device']}): {what}. {why}")
        lines.append("")
    groups = error_groups(records, known)
    for title, prefix in (("Failures, grouped by normalized message", "E"),
                          ("Declared unsupported, grouped by reason", "U")):
        lines += [f"## {title}", ""]
        chosen = [g for g in groups if g["id"].startswith(prefix)]
        if not chosen:
            lines += ["None.", ""]
        for g in chosen:
            known_txt = f" Known: {', '.join(g['known'])}." if g["known"] else ""
            lines += [f"**{g['id']}** {g['status']} - `{g['type']}: {_md(g['message'])}` "
                      f"({g['count']} cell{'s' if g['count'] != 1 else ''}).{known_txt}", ""]
            lines += [f"- {c}" + (f" (in {_md(stage)})" if stage else "")
                      for c, stage in zip(g["cells"], g["stages"])] + [""]
    lines += ["## Known upstream reports", "", "| id | concerns | expected | verdicts here | source |",
              "|---|---|---|---|---|"]
    for k in known:
        concern = (f"{k['engine']}:{_pat(k.get('dtype'))} offload={_pat(k.get('offload'))} "
                   f"compile={_pat(k.get('compile'))}")
        expected = k["expect"].get("status", "failure") + (f" \"{k['expect']['message']}\""
                                                           if k["expect"].get("message") else "")
        if k.get("when"):
            seen = f"not covered by this matrix: {k['when']}"
        else:
            tally = defaultdict(int)
            for row in df.to_dict("records"):
                if applies(k, row):
                    tally[verdict(k, row)] += 1
            seen = ", ".join(f"{n} {v}" for v, n in sorted(tally.items())) or "no cell in this matrix"
        note = f" Note: {_md(k['note'])}" if k.get("note") else ""
        lines.append(f"| {k['key']} {k['id']} | {concern} | {_md(expected)} | {seen} | "
                     f"{_md(k['source'])}: \"{_md(k.get('quote', ''))}\"{note} |")
    return "\n".join(lines) + "\n"


def _pat(p) -> str:
    if p is None:
        return "*"
    return ",".join(map(str, p)) if isinstance(p, list) else str(p)


def _md(text) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def render(records: list[dict], out_dir: str | Path, known: list[dict] | None = None) -> dict[str, Path]:
    """Write ``matrix.md`` and ``matrix.csv`` (one row per combination) into ``out_dir``."""
    known = load_known_issues() if known is None else known
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "matrix.md", "csv": out / "matrix.csv"}
    paths["markdown"].write_text(markdown(records, known))
    matrix_frame(records, known).to_csv(paths["csv"], index=False)
    return paths


def to_html(records: list[dict], known: list[dict] | None = None) -> str:
    """The matrix as an HTML fragment (no <html>/<body>): provenance, one table per model x device x
    compile mode (a class per status on every cell), disagreements and error groups."""
    known = load_known_issues() if known is None else known
    df = matrix_frame(records, known)
    e = html.escape
    if df.empty:
        return "<div class=\"error-matrix\"><p>No results in the store yet.</p></div>"
    parts = ["<div class=\"error-matrix\">",
             "<style>.error-matrix td.status-ok{background:#d9f2d9}.error-matrix td.status-unsupported"
             "{background:#eee}.error-matrix td.status-error,.error-matrix td.status-crashed{background:#f8d0d0}"
             ".error-matrix td.status-oom,.error-matrix td.status-timeout{background:#fbe5c8}"
             ".error-matrix td.disagrees{outline:2px solid #c00}</style>",
             "<p>Built from stored results only. ✓ agrees with a known report, ✗ disagrees, ~ fails "
             "differently, ? untested here. Hover a cell for its error.</p>"]
    latest = _latest(records)
    for model, device in sorted({(r.get("model"), _device(r)) for r in latest}):
        part = [r for r in latest if r.get("model") == model and _device(r) == device]
        sub = df[(df["model"] == model) & (df["device"] == device)]
        parts.append(f"<h3>{e(str(model))} on {e(device)}</h3><ul>"
                     + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in provenance(part))
                     + f"<li>result: {e(_summary(sub))}</li></ul>")
        for _, _, comp, offloads, rows in _pivots(sub):
            parts.append(f"<table class=\"matrix\"><caption>compile={e(comp)}</caption><tr><th>engine:dtype</th>"
                         + "".join(f"<th>offload={e(o)}</th>" for o in offloads) + "</tr>")
            for name, cells in rows.items():
                tds = []
                for o in offloads:
                    row = cells.get(o)
                    if row is None:
                        tds.append("<td>-</td>")
                        continue
                    cls = f"status-{row['status']}" + (" disagrees" if row["disagrees"] else "")
                    tip = f"{row['error_type']}: {row['message']}" if row["message"] else row["status"]
                    if row["stage"]:
                        tip += f" | in {row['stage']}"
                    if row["verdicts"]:
                        tip += " | " + row["verdicts"]
                    tds.append(f"<td class=\"{e(cls)}\" title=\"{e(tip)}\">{e(_cell_text(row))}</td>")
                parts.append(f"<tr><th>{e(name)}</th>{''.join(tds)}</tr>")
            parts.append("</table>")
    news = df[df["disagrees"]]
    if not news.empty:
        parts.append("<h3>Where reality disagrees with the known reports</h3><ul>"
                     + "".join(f"<li>{e(label(r))}: {e(r['status'])} ({e(r['verdicts'])})</li>"
                               for r in news.to_dict("records")) + "</ul>")
    groups = error_groups(records, known)
    if groups:
        parts.append("<h3>Error groups</h3><dl>")
        for g in groups:
            parts.append(f"<dt id=\"matrix-{e(g['id'])}\"><b>{e(g['id'])}</b> {e(g['status'])}: "
                         f"<code>{e(str(g['type']))}: {e(str(g['message']))}</code> ({g['count']} cells)</dt>"
                         f"<dd>{e(', '.join(g['cells']))}</dd>")
        parts.append("</dl>")
    sources = "".join(f"<li>{e(k['key'])} {e(k['id'])}: {e(k['source'])}</li>" for k in known)
    parts.append(f"<details><summary>Known upstream reports</summary><ul>{sources}</ul></details></div>")
    return "\n".join(parts)


def from_store(store: str, out_dir: str | Path, known: str | Path | None = None) -> dict[str, Path]:
    from harness.store import ResultStore

    if "://" not in str(store) and not Path(store).is_file():
        raise FileNotFoundError(f"no result store at {store} (run a sweep first, or pass --store)")
    return render(list(ResultStore(store).records()), out_dir, load_known_issues(known))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("HARNESS_STORE", "results/results.sqlite"),
                        help="result store (default: results/results.sqlite or $HARNESS_STORE)")
    parser.add_argument("--out", default="reports/out", help="folder for matrix.md and matrix.csv")
    parser.add_argument("--known", default=None, help=f"known-issues file (default: {KNOWN_ISSUES.name})")
    args = parser.parse_args(argv)
    try:
        paths = from_store(args.store, args.out, args.known)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
