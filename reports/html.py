"""The report page (``index.html``), self-contained: it opens from disk and fetches nothing.

One section per (model, device): provenance, a sortable table of every cell (`reports.columns.TABLE`; click
a header, click again to reverse; the noise-floor columns only where a cell has a floor, and each PSNR / LPIPS
within or beyond it titled so), the failures, the plots and the image grids, every image inlined as a
base64 ``data:`` URI, CSS (``page.css``) and JS inline. Then the error matrix (`reports.matrix.to_html`) and,
when the results include offloaded cells, the offload table (`reports.offload_table`).
"""
from __future__ import annotations

import base64
import html
import math
import time
from importlib import resources
from pathlib import Path

from reports import columns, matrix, offload_table, provenance, spread
from reports.records import groups, label, source_label

CSS = resources.files("reports").joinpath("page.css").read_text(encoding="utf-8")

#: Sorts a ``table.sortable`` by the clicked header: numbers by ``data-sort``, missing values last.
JS = """
(function(){
  function cellValue(row, idx){
    var cell = row.cells[idx];
    var raw = cell.hasAttribute('data-sort') ? cell.getAttribute('data-sort') : cell.textContent.trim();
    var num = Number(raw);
    return {empty: raw === '', num: (raw !== '' && !isNaN(num)) ? num : null, text: raw.toLowerCase()};
  }
  function sortBy(table, idx, th){
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = cellValue(a, idx), y = cellValue(b, idx);
      if (x.empty !== y.empty) return x.empty ? 1 : -1;       /* missing values last, either way */
      var d = (x.num !== null && y.num !== null) ? x.num - y.num : x.text.localeCompare(y.text);
      return ascending ? d : -d;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('table.sortable').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, idx){
      th.setAttribute('title', 'sort by ' + th.textContent);
      th.addEventListener('click', function(){ sortBy(table, idx, th); });
    });
  });
})();
"""


def data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render(records: list[dict], out_dir: str | Path, grids: list | None = None, plots: list | None = None,
           title: str = "Quantized diffusion leaderboard", source: str | None = None,
           known: list[dict] | None = None) -> Path:
    """Write ``index.html`` into ``out_dir`` and return its path. ``grids`` / ``plots`` are what
    `reports.grid.render` and `reports.plots.render` returned (each shown in its model x device section);
    ``source`` names the store on the page, as `reports.records.source_label` shows a location (an SQLite
    file by its name only, never the rendering machine's folders; a URL without its password); ``known`` are
    the error matrix's annotations (default: the shipped ones)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p class=\"note\">Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
             + (f" from {esc(source_label(source))}" if source else "") + f"; {len(records)} results.</p>"]
    sections = groups(records)
    offloaded = offload_table.has_offload(records)
    if any(provenance.is_synthetic(g) for g in sections.values()):
        parts.append(f"<p class=\"warning\" id=\"synthetic-warning\"><strong>{esc(provenance.SYNTHETIC_WARNING)}"
                     "</strong> Speed and memory of synthetic models are real.</p>")
    if not records:
        parts.append("<p>No results in the store yet.</p>")
    if sections:
        parts.append("<nav><ul>" + "".join(f"<li><a href=\"#{_anchor(m, d)}\">{esc(m)} on {esc(d)}</a></li>"
                                           for m, d in sections) + "<li><a href=\"#error-matrix\">error matrix</a>"
                     "</li>" + ("<li><a href=\"#offload-modes\">offload modes</a></li>" if offloaded else "")
                     + "</ul></nav>")
    for (model, device), group in sections.items():
        parts.append(_section(model, device, group,
                              [g for g in grids or [] if (g.model, g.device) == (model, device)],
                              [p for p in plots or [] if (p.model, p.device) == (model, device)]))
    parts.append(f"<section id=\"error-matrix\"><h2>Error matrix</h2>{matrix.to_html(records, known)}</section>")
    if offloaded:
        parts.append("<section id=\"offload-modes\"><h2>Offload modes side by side</h2>"
                     f"{offload_table.to_html(records)}</section>")
    parts.append(f"<script>{JS}</script></body></html>\n")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _anchor(model: str, device: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in f"{model}-{device}").lower()


def _section(model: str, device: str, group: list[dict], grids: list, plots: list) -> str:
    esc = html.escape
    info = provenance.summary(group)
    parts = [f"<section id=\"{_anchor(model, device)}\"><h2>{esc(model)} on {esc(device)}</h2>",
             "<dl class=\"prov\">" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in info.items()
                                             if k != "warning") + "</dl>"]
    if "warning" in info:
        parts.append(f"<p class=\"warning\">{esc(info['warning'])}</p>")
    parts.append("<div class=\"scroll\">" + _table(group) + "</div>")
    if any(columns.floor_verdict(r) is not None for r in group):
        parts.append(f"<p class=\"note floor-note\">{esc(columns.FLOOR_NOTE)}</p>")
    parts.append(spread.to_html(group))
    failures = [r for r in group if r.get("status") != "ok"]
    if failures:
        parts.append("<h3>Failures</h3><ul>" + "".join(
            f"<li><code>{esc(label(r))}</code>: <strong>{esc(str(r.get('status')))}</strong> "
            f"{esc(str((r.get('error') or {}).get('message') or ''))}</li>" for r in failures) + "</ul>")
    if plots:
        parts.append("<h3>Plots</h3><div class=\"plots\">" + "".join(
            f"<figure><img class=\"plot\" alt=\"{esc(p.title)}\" src=\"{data_uri(p.path)}\">"
            f"<figcaption>{esc(p.title)}</figcaption></figure>" for p in plots) + "</div>")
    if grids:
        parts.append("<h3>Image grids: BF16 beside each engine, same prompt and seed, and each engine's "
                     "|engine - BF16| per pixel below</h3>" + "".join(
            f"<figure><img class=\"grid\" alt=\"{esc(model)} {esc(g.image)}\" src=\"{data_uri(g.path)}\">"
            f"<figcaption>{esc(g.image)}: {esc(', '.join(g.tiles))}{esc(_scale(g))}</figcaption></figure>"
            for g in grids))
    return "\n".join(parts) + "</section>"


def _scale(grid) -> str:
    """A grid's difference scale for its caption ("" without a difference row)."""
    top = getattr(grid, "difference_scale", None)
    return f"; difference colour scale 0 .. {top:.3g} of 255" if top is not None else ""


def _floor_title(column, record: dict, verdict: str | None) -> str:
    """The ``title`` attribute marking a quality figure within (or beyond) the cell's noise floor."""
    if verdict not in ("within", "beyond") or column.key not in columns.FLOOR_METRICS:
        return ""
    floor = (record.get("quality") or {}).get("floor") or {}
    base = floor.get(column.key)
    what = "within the noise floor" if verdict == "within" else "beyond the noise floor"
    extra = f" (BF16 with the same compile / offload: {format(base, column.fmt)})" if isinstance(base, float) else ""
    return f" title=\"{html.escape(what + extra)}\" class=\"floor-{verdict}\""


def _table(group: list[dict]) -> str:
    """The leaderboard table of one section: ok cells first, fastest first; numbers carry ``data-sort``."""
    esc = html.escape
    rows = sorted(group, key=lambda r: (r.get("status") != "ok", -((r.get("metrics") or {}).get("steps_per_s") or 0)))
    has_floor = any(columns.floor_verdict(r) is not None for r in group)
    shown = [c for c in columns.TABLE if has_floor or c not in columns.FLOOR_FIGURES]
    head = "".join(f"<th class=\"{'num' if c.numeric else 'text'}\" data-key=\"{c.key}\">{esc(c.label)}</th>"
                   for c in shown)
    body = []
    for r in rows:
        cells = []
        verdict = columns.floor_verdict(r)
        for c in shown:
            value = c.get(r)
            if c.numeric:
                if isinstance(value, (int, float)) and math.isfinite(value):
                    title = _floor_title(c, r, verdict)
                    cells.append(f"<td data-sort=\"{value!r}\"{title}>{format(value, c.fmt)}</td>")
                else:
                    cells.append("<td data-sort=\"\">-</td>")
            else:
                css = "text" + (f" status-{'ok' if value == 'ok' else 'bad'}" if c is columns.STATUS else "")
                if c.key == "vs_floor" and value is not None:
                    css += f" floor-{value.replace(' ', '-').replace('/', '')}"
                cells.append(f"<td class=\"{css}\">{esc(str(value if value is not None else '-'))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class=\"sortable leaderboard\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
