"""The matrix as an HTML fragment for the report page: per model x device its provenance and one table per
compile mode (a ``status-<status>`` class on every cell, the error and stage in its tooltip), then the
disagreements, the error groups and the known reports. Styled by ``matrix.css`` (inlined)."""
from __future__ import annotations

from html import escape as e
from importlib import resources

from reports.matrix import groups
from reports.matrix.frame import cell_text, matrix_frame, pivots, sections, status_counts
from reports.matrix.known import load_known_issues

CSS = resources.files("reports.matrix").joinpath("matrix.css").read_text(encoding="utf-8")
LEGEND = ("Built from stored results only. ✓ agrees with a known report, ✗ disagrees, ~ fails differently, "
          "? untested here. Hover a cell for its error.")


def to_html(records: list[dict], known: list[dict] | None = None) -> str:
    """The fragment (no ``<html>``/``<body>``) for ``records``, checked against the annotations ``known``
    (default: the shipped ones)."""
    known = load_known_issues() if known is None else known
    df = matrix_frame(records, known)
    if df.empty:
        return "<div class=\"error-matrix\"><p>No results in the store yet.</p></div>"
    parts = ["<div class=\"error-matrix\">", f"<style>{CSS}</style>", f"<p>{e(LEGEND)}</p>"]
    for model, device, info, part in sections(records, df):
        parts.append(f"<h3>{e(str(model))} on {e(device)}</h3><ul>"
                     + "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in info)
                     + f"<li>result: {e(status_counts(part))}</li></ul>")
        for comp, offloads, rows in pivots(part):
            parts.append(f"<table class=\"matrix\"><caption>compile={e(comp)}</caption><tr><th>engine:dtype</th>"
                         + "".join(f"<th>offload={e(o)}</th>" for o in offloads) + "</tr>")
            for name, cells in rows.items():
                tds = "".join(_cell(cells.get(o)) for o in offloads)
                parts.append(f"<tr><th>{e(name)}</th>{tds}</tr>")
            parts.append("</table>")
    disagreeing = df[df["disagrees"]]
    if not disagreeing.empty:
        parts.append("<h3>Where reality disagrees with the known reports</h3><ul>"
                     + "".join(f"<li>{e(groups.label(r))}: {e(r['status'])} ({e(r['verdicts'])})</li>"
                               for r in disagreeing.to_dict("records")) + "</ul>")
    found = groups.from_frame(df)
    if found:
        parts.append("<h3>Error groups</h3><dl>")
        for g in found:
            parts.append(f"<dt id=\"matrix-{e(g['id'])}\"><b>{e(g['id'])}</b> {e(g['status'])}: "
                         f"<code>{e(str(g['type']))}: {e(str(g['message']))}</code> ({g['count']} cells)</dt>"
                         f"<dd>{e(', '.join(g['cells']))}</dd>")
        parts.append("</dl>")
    sources = "".join(f"<li>{e(k['key'])} {e(k['id'])}: {e(k['source'])}</li>" for k in known)
    parts.append(f"<details><summary>Known upstream reports</summary><ul>{sources}</ul></details></div>")
    return "\n".join(parts)


def _cell(row: dict | None) -> str:
    if row is None:
        return "<td>-</td>"
    cls = f"status-{row['status']}" + (" disagrees" if row["disagrees"] else "")
    tip = f"{row['error_type']}: {row['message']}" if row["message"] else row["status"]
    if row["stage"]:
        tip += f" | in {row['stage']}"
    if row["verdicts"]:
        tip += " | " + row["verdicts"]
    return f"<td class=\"{e(cls)}\" title=\"{e(tip)}\">{e(cell_text(row))}</td>"
