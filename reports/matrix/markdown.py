"""The matrix as markdown (``matrix.md``): per model x device its provenance and one table per compile mode
(rows ``engine:dtype``, one column per offload mode), then where reality disagrees with the known reports,
the grouped failures and unsupported reasons, and the known reports with their verdicts here."""
from __future__ import annotations

from collections import defaultdict

import pandas as pd

from reports.matrix import groups
from reports.matrix.frame import cell_text, matrix_frame, pivots, sections, status_counts
from reports.matrix.known import applies, load_known_issues, news, verdict

LEGEND = ("Built from stored results only. Cell: status, its error group (`E`: failures, `U`: declared "
          "unsupported) and the known upstream reports that concern it: ✓ agrees, ✗ disagrees "
          "(news), ~ fails differently, ? untested here.")


def to_markdown(records: list[dict], known: list[dict] | None = None) -> str:
    """``matrix.md``'s text for ``records``, checked against the annotations ``known`` (default: the
    shipped ones)."""
    known = load_known_issues() if known is None else known
    df = matrix_frame(records, known)
    lines = ["# Error matrix", ""]
    if df.empty:
        return "\n".join(lines + ["No results in the store yet.", ""])
    lines += [LEGEND, ""]
    for model, device, info, part in sections(records, df):
        lines += [f"## {model} on {device}", ""]
        lines += [f"- {k}: {v}" for k, v in info]
        lines += [f"- result: {status_counts(part)}", ""]
        for comp, offloads, rows in pivots(part):
            header = " | ".join(f"offload={o}" for o in offloads)
            lines += [f"### compile={comp}", "", f"| engine:dtype | {header} |", "|---|" + "---|" * len(offloads)]
            for name, cells in rows.items():
                lines.append(f"| {name} | " + " | ".join(cell_text(cells[o]) if o in cells else "-"
                                                           for o in offloads) + " |")
            lines.append("")
    lines += _disagreements(df) + _groups(groups.from_frame(df)) + _known(df, known)
    return "\n".join(lines) + "\n"


def _disagreements(df: pd.DataFrame) -> list[str]:
    lines = ["## Where reality disagrees with the known reports", ""]
    disagreeing = df[df["disagrees"]]
    if disagreeing.empty:
        return lines + ["Nothing: every known report that the matrix covers agrees with it.", ""]
    for row in disagreeing.to_dict("records"):
        what = row["status"] + (f" ({row['error_type']}: {row['message']})" if row["message"] else "")
        lines.append(f"- {groups.label(row)} ({row['model']}, {row['device']}): {what}. {news(row['verdicts'])}")
    return lines + [""]


def _groups(found: list[dict]) -> list[str]:
    lines = []
    for title, prefix in (("Failures, grouped by normalized message", "E"),
                          ("Declared unsupported, grouped by reason", "U")):
        lines += [f"## {title}", ""]
        chosen = [g for g in found if g["id"].startswith(prefix)]
        if not chosen:
            lines += ["None.", ""]
        for g in chosen:
            known_txt = f" Known: {', '.join(g['known'])}." if g["known"] else ""
            lines += [f"**{g['id']}** {g['status']} - `{g['type']}: {_md(g['message'])}` "
                      f"({g['count']} cell{'s' if g['count'] != 1 else ''}).{known_txt}", ""]
            lines += [f"- {c}" + (f" (in {_md(stage)})" if stage else "")
                      for c, stage in zip(g["cells"], g["stages"])] + [""]
    return lines


def _known(df: pd.DataFrame, known: list[dict]) -> list[str]:
    lines = ["## Known upstream reports", "", "| id | concerns | expected | verdicts here | source |",
             "|---|---|---|---|---|"]
    rows = df.to_dict("records")
    for k in known:
        concern = (f"{k['engine']}:{_pattern(k.get('dtype'))} offload={_pattern(k.get('offload'))} "
                   f"compile={_pattern(k.get('compile'))}")
        expected = k["expect"].get("status", "failure") + (f" \"{k['expect']['message']}\""
                                                           if k["expect"].get("message") else "")
        if k.get("when"):
            seen = f"not covered by this matrix: {k['when']}"
        else:
            tally: dict[str, int] = defaultdict(int)
            for row in rows:
                if applies(k, row):
                    tally[verdict(k, row)] += 1
            seen = ", ".join(f"{n} {v}" for v, n in sorted(tally.items())) or "no cell in this matrix"
        note = f" Note: {_md(k['note'])}" if k.get("note") else ""
        lines.append(f"| {k['key']} {k['id']} | {concern} | {_md(expected)} | {seen} | "
                     f"{_md(k['source'])}: \"{_md(k.get('quote', ''))}\"{note} |")
    return lines


def _pattern(p) -> str:
    if p is None:
        return "*"
    return ",".join(map(str, p)) if isinstance(p, list) else str(p)


def _md(text) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")
