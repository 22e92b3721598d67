"""Run-to-run spread of a cell's speed, as records carry it (``metrics.spread``, `harness.measure.spread`):
read it, lay it out for the markdown leaderboard and the HTML page, and turn it into the regression check's
noise allowance.

A spread is ``{n, min, q1, median, q3, max, iqr}`` over the timed calls of one cell; records measured with
fewer than three repeats have none, and every function here then answers "nothing" (no lines, no HTML, a
zero allowance).
"""
from __future__ import annotations

import html
import math

from reports.records import label

#: Figures with a spread: record key -> (header, which way is better).
FIGURES = {"steps_per_s": ("steps/s", "higher"), "s_per_image": ("s/image", "lower")}
KEYS = ("n", "min", "q1", "median", "q3", "max", "iqr")


def of(record: dict, metric: str) -> dict | None:
    """The spread of ``metric`` in ``record``, or None when the record has none (or a malformed one)."""
    value = ((record.get("metrics") or {}).get("spread") or {}).get(metric)
    if not isinstance(value, dict) or not all(_number(value.get(k)) for k in KEYS):
        return None
    return value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def text(spread: dict | None, fmt: str = ".3g") -> str:
    """``median [min .. max], IQR iqr`` (``-`` without a spread)."""
    if spread is None:
        return "-"
    return (f"{format(spread['median'], fmt)} [{format(spread['min'], fmt)} .. {format(spread['max'], fmt)}], "
            f"IQR {format(spread['iqr'], fmt)}")


def _rows(records: list[dict]) -> list[dict]:
    """The ok records with a spread of any figure, fastest first."""
    rows = [r for r in records if r.get("status") == "ok" and any(of(r, m) for m in FIGURES)]
    return sorted(rows, key=lambda r: -((r.get("metrics") or {}).get("steps_per_s") or 0))


def _calls(record: dict) -> str:
    counts = {of(record, m)["n"] for m in FIGURES if of(record, m)}
    return "/".join(str(n) for n in sorted(counts))


def markdown(records: list[dict]) -> list[str]:
    """Markdown lines of the spread table of one leaderboard section (empty when no cell has a spread)."""
    rows = _rows(records)
    if not rows:
        return []
    heads = [f"{name} median [min .. max], IQR" for name, _ in FIGURES.values()]
    lines = ["", "Run-to-run spread over each cell's timed calls:", "",
             "| cell | " + " | ".join(heads) + " | timed calls |", "|---" * (len(heads) + 2) + "|"]
    for r in rows:
        lines.append(f"| {label(r)} | " + " | ".join(text(of(r, m)) for m in FIGURES) + f" | {_calls(r)} |")
    return lines


def to_html(records: list[dict]) -> str:
    """The spread table of one HTML section, with its heading ("" when no cell has a spread)."""
    rows = _rows(records)
    if not rows:
        return ""
    esc = html.escape
    head = "".join(f"<th class=\"num\">{esc(name)} median [min .. max], IQR</th>" for name, _ in FIGURES.values())
    body = "".join("<tr><td class=\"text\">" + esc(label(r)) + "</td>"
                   + "".join(f"<td>{esc(text(of(r, m)))}</td>" for m in FIGURES)
                   + f"<td>{esc(_calls(r))}</td></tr>" for r in rows)
    return ("<h3>Run-to-run spread over each cell's timed calls</h3><div class=\"scroll\"><table class=\"spread\">"
            f"<thead><tr><th class=\"text\">cell</th>{head}<th class=\"num\">timed calls</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def allowance(before: dict, tonight: dict, metric: str) -> float:
    """How far ``metric`` may move between two nights' records before the change leaves their measured noise:
    the two nights' interquartile ranges added. Each night's median is one draw from scatter about that wide,
    so a change smaller than both together is what the nights' own noise can make. A night without a spread
    adds nothing; 0.0 when neither has one."""
    return sum(s["iqr"] for s in (of(before, metric), of(tonight, metric)) if s is not None)
