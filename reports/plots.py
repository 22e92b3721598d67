"""Plots per (model, device), matplotlib with the Agg backend (no display needed):

- ``tradeoff``: memory vs quality (PSNR vs BF16) coloured by speed, the Pareto front marked (cells no other
  cell beats on memory, quality and speed at once);
- ``speed``: denoising it/s per engine/dtype;
- ``memory``: weights, memory after load and peak memory per engine/dtype.

Each figure carries its provenance in a footer and, for synthetic weights, the warning. Labels, legends and
value annotations stay inside the figure and clear of the data they label (the tests check the drawn boxes).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reports import provenance  # noqa: E402
from reports.grid import slug  # noqa: E402
from reports.records import groups, is_reference, label  # noqa: E402

#: kind -> what its title says after "model on device: ".
KINDS = {"tradeoff": "memory vs quality vs speed", "speed": "denoising speed", "memory": "memory"}


@dataclass
class Plot:
    """One written figure, with the section (model, device) it belongs to."""

    path: Path
    model: str
    device: str
    kind: str
    title: str


@dataclass
class Point:
    """One cell on the trade-off plot."""

    label: str
    memory_gib: float | None
    #: PSNR in dB vs BF16; inf for the reference itself.
    quality_db: float | None
    steps_per_s: float | None


def point(record: dict) -> Point:
    """The trade-off figures of a record: peak memory (else memory after load), PSNR, speed."""
    m, q = record.get("metrics") or {}, record.get("quality") or {}
    memory = m.get("peak_mem_gib") if m.get("peak_mem_gib") is not None else m.get("mem_after_load_gib")
    quality = math.inf if is_reference(record) else q.get("psnr_db")
    return Point(label(record), memory, quality, m.get("steps_per_s"))


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point dominates (memory no higher, quality and speed no lower, one of them strictly).
    Points lacking any of the three figures are never on the front."""
    full = [p for p in points if None not in (p.memory_gib, p.quality_db, p.steps_per_s)]

    def dominates(a: Point, b: Point) -> bool:
        no_worse = a.memory_gib <= b.memory_gib and a.quality_db >= b.quality_db and a.steps_per_s >= b.steps_per_s
        better = a.memory_gib < b.memory_gib or a.quality_db > b.quality_db or a.steps_per_s > b.steps_per_s
        return no_worse and better

    return [p for p in full if not any(dominates(o, p) for o in full if o is not p)]


def render(records: list[dict], out_dir: str | Path) -> list[Plot]:
    """Write the three plots of every (model, device) with ok results into ``out_dir``; return them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for (model, device), group in groups(records).items():
        if not any(r.get("status") == "ok" for r in group):
            continue
        for kind, what in KINDS.items():
            title = f"{model} on {device}: {what}"
            fig = draw(kind, group, title)
            path = out / f"{slug(model)}__{slug(device)}__{kind}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            plots.append(Plot(path, model, device, kind, title))
    return plots


def draw(kind: str, group: list[dict], title: str):
    """The ``kind`` figure (`KINDS`) of one model x device group: its ok cells, the group's provenance in the
    footer. The caller closes it."""
    ok = [r for r in group if r.get("status") == "ok"]
    fig = {"tradeoff": _tradeoff, "speed": _speed, "memory": _memory}[kind](ok, title)
    _footer(fig, group)
    if kind == "tradeoff" and fig.axes:
        _untangle(fig.axes[0])
    return fig


def _memory_label(records: list[dict]) -> str:
    kinds = {(r.get("metrics") or {}).get("memory_kind") for r in records}
    return "peak GPU memory (GiB)" if kinds == {"cuda"} else "peak memory (GiB; host RSS without a GPU)"


def _tradeoff(records: list[dict], title: str):
    points = [point(r) for r in records]
    shown = [p for p in points if p.memory_gib is not None and p.quality_db is not None]
    finite = [p.quality_db for p in shown if math.isfinite(p.quality_db)]
    top = (max(finite) + 5) if finite else 50.0  # where the reference (PSNR = inf) is drawn
    fig, ax = plt.subplots(figsize=(9, 6))
    if not shown:
        ax.text(0.5, 0.5, "no cell has both memory and quality figures", ha="center", transform=ax.transAxes)
        ax.set_title(title)
        return fig

    def y(p: Point) -> float:
        return p.quality_db if math.isfinite(p.quality_db) else top

    speeds = [p.steps_per_s for p in shown if p.steps_per_s is not None]
    scatter = ax.scatter([p.memory_gib for p in shown], [y(p) for p in shown],
                         c=[p.steps_per_s if p.steps_per_s is not None else math.nan for p in shown],
                         cmap="viridis", s=70, zorder=3, vmin=min(speeds, default=0), vmax=max(speeds, default=1),
                         plotnonfinite=True)
    fig.colorbar(scatter, ax=ax, label="denoising steps/s")
    front = pareto_front(points)
    if front:
        ax.scatter([p.memory_gib for p in front], [y(p) for p in front], s=220, facecolors="none",
                   edgecolors="crimson", linewidths=2, zorder=4, label="Pareto front (memory, quality, speed)")
        line = sorted(front, key=lambda p: (p.memory_gib, -y(p)))
        best, xs, ys = -math.inf, [], []
        for p in line:  # the memory-quality staircase through the front
            if y(p) > best:
                best = y(p)
                xs.append(p.memory_gib)
                ys.append(best)
        ax.step(xs, ys, where="post", color="crimson", alpha=0.5, zorder=2)
        # Below the axes, like the bar plots' legends: it covers no point and no label.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    _label_points(ax, shown, y)
    ax.set_xlabel(_memory_label(records))
    ax.set_ylabel("PSNR vs BF16 (dB, higher is closer)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def _label_points(ax, shown: list[Point], y) -> None:
    """Name every point beside it, inside the axes: the limits get room above the top row (the reference) and
    at both sides, and a label runs away from the nearer side (centred for a point in the middle), so no
    label leaves the axes towards the colour bar or the title."""
    xs, ys = [p.memory_gib for p in shown], [y(p) for p in shown]
    x_span = (max(xs) - min(xs)) or max(abs(xs[0]) * 0.2, 1.0)
    y_span = (max(ys) - min(ys)) or max(abs(ys[0]) * 0.2, 1.0)
    ax.set_xlim(min(xs) - 0.08 * x_span, max(xs) + 0.08 * x_span)
    ax.set_ylim(min(ys) - 0.08 * y_span, max(ys) + 0.12 * y_span)
    left, right = ax.get_xlim()
    for p in shown:
        text = p.label + (" (PSNR inf: reference)" if not math.isfinite(p.quality_db) else "")
        where = (p.memory_gib - left) / (right - left)
        ha, dx = ("right", -6) if where > 0.6 else ("left", 6) if where < 0.4 else ("center", 0)
        ax.annotate(text, (p.memory_gib, y(p)), textcoords="offset points", xytext=(dx, 7), ha=ha, va="bottom",
                    fontsize=8, gid=POINT_LABEL)


#: ``gid`` of the trade-off plot's point labels.
POINT_LABEL = "point-label"
#: Radius, in points, kept clear around every marker (the Pareto ring: s=220, plus its line).
MARKER_RADIUS_PT = 8.5
#: Where a label may sit relative to its point, in order of preference: offset in points, alignment.
PLACES = [((6, 7), "left", "bottom"), ((-6, 7), "right", "bottom"), ((6, -7), "left", "top"),
          ((-6, -7), "right", "top"), ((0, 10), "center", "bottom"), ((0, -10), "center", "top"),
          ((11, 0), "left", "center"), ((-11, 0), "right", "center"), ((8, 16), "left", "bottom"),
          ((-8, 16), "right", "bottom"), ((8, -16), "left", "top"), ((-8, -16), "right", "top")]


def _untangle(ax) -> None:
    """Move each point label (once the figure's layout is final) to the first of `PLACES` where it stays
    inside the axes and clear of every marker and of the labels already placed, top row first; a label
    with no such place keeps the first place inside the axes."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_gid() == POINT_LABEL]
    centres = [ax.transData.transform(t.xy) for t in labels]
    radius = MARKER_RADIUS_PT * fig.dpi / 72
    placed = []
    for text in sorted(labels, key=lambda t: -ax.transData.transform(t.xy)[1]):
        fallback = None
        for (dx, dy), ha, va in PLACES:
            text.set_position((dx, dy))
            text.set_ha(ha)
            text.set_va(va)
            box = text.get_window_extent(renderer)
            if not (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1):
                continue
            fallback = fallback or ((dx, dy), ha, va)
            if not any(box.overlaps(b) for b in placed) and not any(_near(box, c, radius) for c in centres):
                break
        else:
            if fallback is not None:
                (dx, dy), ha, va = fallback
                text.set_position((dx, dy))
                text.set_ha(ha)
                text.set_va(va)
        placed.append(text.get_window_extent(renderer))


def _near(box, centre, radius: float) -> bool:
    """Whether ``box`` (display units) comes within ``radius`` of ``centre``."""
    nearest_x = min(max(centre[0], box.x0), box.x1)
    nearest_y = min(max(centre[1], box.y0), box.y1)
    return (nearest_x - centre[0]) ** 2 + (nearest_y - centre[1]) ** 2 < radius ** 2


def _bars(labels: list[str], series: dict[str, list[float | None]], xlabel: str, title: str):
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.45 * len(labels) * max(1, len(series)) ** 0.5 + 1.5)))
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        pos = [j + (i - (len(series) - 1) / 2) * height for j in range(len(labels))]
        vals = [v if v is not None else 0.0 for v in values]
        bars = ax.barh(pos, vals, height=height, label=name)
        for bar, v in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " -" if v is None else f" {v:.3g}",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    widest = max((v for values in series.values() for v in values if v is not None), default=0.0)
    ax.set_xlim(0, widest * 1.12 or 1.0)  # room for the value written after the longest bar
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if len(series) > 1:  # below the axes, so it covers no bar and no value
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(series), frameon=False)
    return fig


def _speed(records: list[dict], title: str):
    rows = sorted(records, key=lambda r: -((r.get("metrics") or {}).get("steps_per_s") or 0))
    return _bars([label(r) for r in rows],
                 {"steps/s": [(r.get("metrics") or {}).get("steps_per_s") for r in rows]},
                 "denoising steps/s (higher is faster)", title)


def _memory(records: list[dict], title: str):
    rows = sorted(records, key=lambda r: (r.get("metrics") or {}).get("peak_mem_gib") or 0)
    metric = {"weights (quantized components)": "weight_gib", "after load": "mem_after_load_gib",
              "peak during generation": "peak_mem_gib"}
    series = {name: [(r.get("metrics") or {}).get(key) for r in rows] for name, key in metric.items()}
    return _bars([label(r) for r in rows], series, _memory_label(records).replace("peak ", ""), title)


def _footer(fig, group: list[dict]) -> None:
    lines = textwrap.wrap(provenance.one_line(group), 150)
    if provenance.is_synthetic(group):
        lines += textwrap.wrap("WARNING: " + provenance.SYNTHETIC_WARNING, 150)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="dimgray", va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.025 * (len(lines) + 1), 1, 1))
