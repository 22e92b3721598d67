"""A self-contained HTML leaderboard (``index.html``): opens from disk, fetches nothing.

One section per (model, device): provenance, a sortable table of every cell (click a header; click again to
reverse), the failures, the plots and the image grids, all images inlined as base64 ``data:`` URIs, CSS and
JS inline. Then the error matrix, from `reports.matrix.to_html` when that module is installed, and the
offload modes side by side (`reports.offload`) when the results include offloaded cells.
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

from reports import offload, provenance
from reports.leaderboard import COLUMNS, SYNTHETIC_WARNING

#: Table columns: key in a record's top level / metrics / quality -> header, number format.
NUMBER_FORMATS = {"weight_gib": ".3f", "mem_after_load_gib": ".3f", "peak_mem_gib": ".3f",
                  "peak_reserved_gib": ".3f", "steps_per_s": ".3g", "s_per_image": ".3g", "first_call_s": ".3g",
                  "load_s": ".3g", "psnr_db": ".2f", "ssim": ".4f", "ms_ssim": ".4f", "lpips": ".4f",
                  "clip_score": ".2f"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d1d1f;max-width:1600px}
h1{margin-top:0}h2{margin-top:2.5rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
.warning{background:#fff4e5;border-left:5px solid #f0a020;padding:.6rem .9rem;margin:1rem 0}
.note{color:#666;font-style:italic}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem;font-size:.9rem}
dl.prov dt{font-weight:600}dl.prov dd{margin:0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
td.text,th.text{text-align:left}
th{background:#f3f3f5;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
td.status-ok{color:#137333;font-weight:600}td.status-bad{color:#b3261e;font-weight:600}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{flex:1 1 480px}
"""

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

TEXT_COLUMNS = ("engine", "dtype", "mode", "offload", "compile", "status")


def data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render(records: list[dict], out_dir: str | Path, grids: list | None = None, plots: list | None = None,
           title: str = "Quantized diffusion leaderboard", source: str | None = None) -> Path:
    """Write ``index.html`` into ``out_dir``; ``grids`` / ``plots`` are what `reports.grid.render` and
    `reports.plots.render` returned (embedded in their model x device section). Return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p class=\"note\">Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}"
             + (f" from {esc(source)}" if source else "") + f"; {len(records)} results.</p>"]
    groups = provenance.groups(records)
    if any(provenance.is_synthetic(g) for g in groups.values()):
        parts.append(f"<p class=\"warning\" id=\"synthetic-warning\"><strong>{esc(SYNTHETIC_WARNING)}</strong> "
                     "Speed and memory of synthetic models are real.</p>")
    if not records:
        parts.append("<p>No results in the store yet.</p>")
    if groups:
        parts.append("<nav><ul>" + "".join(f"<li><a href=\"#{_anchor(m, d)}\">{esc(m)} on {esc(d)}</a></li>"
                                           for m, d in groups) + "<li><a href=\"#error-matrix\">error matrix</a>"
                     "</li>" + ("<li><a href=\"#offload-modes\">offload modes</a></li>" if offload.has_offload(records) else "")
                     + "</ul></nav>")
    for (model, device), group in groups.items():
        parts.append(_section(model, device, group,
                              [g for g in grids or [] if (g.model, g.device) == (model, device)],
                              [p for p in plots or [] if (p.model, p.device) == (model, device)]))
    parts.append(_matrix_section(records))
    if offload.has_offload(records):
        parts.append("<section id=\"offload-modes\"><h2>Offload modes side by side</h2>"
                     f"{offload.to_html(records)}</section>")
    parts.append(f"<script>{JS}</script></body></html>\n")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _anchor(model: str, device: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in f"{model}-{device}").lower()


def _section(model: str, device: str, group: list[dict], grids: list, plots: list) -> str:
    esc = html.escape
    info = provenance.describe(group)
    parts = [f"<section id=\"{_anchor(model, device)}\"><h2>{esc(model)} on {esc(device)}</h2>",
             "<dl class=\"prov\">" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in info.items()
                                             if k != "warning") + "</dl>"]
    if "warning" in info:
        parts.append(f"<p class=\"warning\">{esc(info['warning'])}</p>")
    parts.append("<div class=\"scroll\">" + _table(group) + "</div>")
    failures = [r for r in group if r.get("status") != "ok"]
    if failures:
        parts.append("<h3>Failures</h3><ul>" + "".join(
            f"<li><code>{esc(provenance.label(r))}</code>: <strong>{esc(str(r.get('status')))}</strong> "
            f"{esc(str((r.get('error') or {}).get('message') or ''))}</li>" for r in failures) + "</ul>")
    if plots:
        parts.append("<h3>Plots</h3><div class=\"plots\">" + "".join(
            f"<figure><img class=\"plot\" alt=\"{esc(p.title)}\" src=\"{data_uri(p.path)}\">"
            f"<figcaption>{esc(p.title)}</figcaption></figure>" for p in plots) + "</div>")
    if grids:
        parts.append("<h3>Image grids: BF16 beside each engine, same prompt and seed</h3>" + "".join(
            f"<figure><img class=\"grid\" alt=\"{esc(model)} {esc(g.image)}\" src=\"{data_uri(g.path)}\">"
            f"<figcaption>{esc(g.image)}: {esc(', '.join(g.tiles))}</figcaption></figure>" for g in grids))
    return "\n".join(parts) + "</section>"


def _value(record: dict, key: str):
    if key in NUMBER_FORMATS:
        block = (record.get("quality") if key in ("psnr_db", "ssim", "ms_ssim", "lpips", "clip_score")
                 else record.get("metrics")) or {}
        return block.get(key)
    return record.get(key)


def _table(group: list[dict]) -> str:
    esc = html.escape
    rows = sorted(group, key=lambda r: (r.get("status") != "ok", -((r.get("metrics") or {}).get("steps_per_s") or 0)))
    head = "".join(f"<th class=\"{'text' if k in TEXT_COLUMNS else 'num'}\" data-key=\"{k}\">{esc(name)}</th>"
                   for k, name in COLUMNS.items())
    body = []
    for r in rows:
        cells = []
        for key in COLUMNS:
            value = _value(r, key)
            if key in NUMBER_FORMATS:
                if isinstance(value, (int, float)) and math.isfinite(value):
                    cells.append(f"<td data-sort=\"{value!r}\">{format(value, NUMBER_FORMATS[key])}</td>")
                else:
                    cells.append("<td data-sort=\"\">-</td>")
            else:
                css = "text" + (f" status-{'ok' if value == 'ok' else 'bad'}" if key == "status" else "")
                cells.append(f"<td class=\"{css}\">{esc(str(value if value is not None else '-'))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class=\"sortable leaderboard\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _matrix_section(records: list[dict]) -> str:
    try:
        from reports.matrix import to_html
    except ImportError:
        return ("<section id=\"error-matrix\"><h2>Error matrix</h2><p class=\"note\">Not in this report: "
                "the error matrix renderer (reports.matrix) is not installed.</p></section>")
    return f"<section id=\"error-matrix\"><h2>Error matrix</h2>{to_html(records)}</section>"
