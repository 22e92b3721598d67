"""The nightly regression check: tonight's results against the previous night's, cell by cell.

    python -m reports regression --store tonight.sqlite --baseline last-night.sqlite [--config conf/regression.yaml]
        [--set steps_per_s.relative=0.1] [--summary summary.md]

A cell is matched across nights by what it ran (model, GPU, engine, dtype, mode, components, offload,
compile, workload), not by its resume key, which also holds library versions: an upgrade that slows a
cell down is exactly what this must catch. A tracked figure regresses when it is worse than the baseline by
more than its allowance: ``max(relative * |baseline|, absolute)``, thresholds from ``conf/regression.yaml``,
or, where the nights measured a run-to-run spread of that figure (``metrics.spread``, ``workload.repeats >= 3``),
the larger of that and the two nights' spread (`reports.spread.allowance`: their interquartile ranges
added), so a change the nights' own measured noise can make is not flagged. A cell that was ok and is
not ok any more regresses too; a missing cell is reported (or fails, with fail_on_missing).

The command's exit status: 0 no regression (or no baseline yet), 1 regression, 2 bad arguments or no store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.paths import conf_dir

from reports import spread
from reports.columns import figure_path, lookup
from reports.records import newest

DEFAULT_CONFIG = Path(conf_dir()) / "regression.yaml"
#: The thresholds without a config file; ``conf/regression.yaml`` repeats them (a test keeps the two equal).
BUILTIN = {
    "metrics": {
        "steps_per_s": {"better": "higher", "relative": 0.05, "absolute": 0.0},
        "s_per_image": {"better": "lower", "relative": 0.05, "absolute": 0.0},
        "peak_mem_gib": {"better": "lower", "relative": 0.05, "absolute": 0.05},
        "mem_after_load_gib": {"better": "lower", "relative": 0.05, "absolute": 0.05},
        "psnr_db": {"better": "higher", "relative": 0.0, "absolute": 0.5},
        "ssim": {"better": "higher", "relative": 0.0, "absolute": 0.01},
        "lpips": {"better": "lower", "relative": 0.0, "absolute": 0.01},
    },
    "fail_on_status": True,
    "fail_on_missing": False,
}


@dataclass
class Finding:
    """One tracked figure (or the status, or the cell's presence) of one cell, compared across nights."""

    #: The cell, as `cell_label` names it.
    cell: str
    metric: str
    baseline: object
    tonight: object
    #: "regression", "improvement" or "note" (missing / new cells, a regression below the bar).
    kind: str
    detail: str = ""


@dataclass
class Outcome:
    """Every finding of a comparison, and how many cells both nights measured."""

    findings: list[Finding] = field(default_factory=list)
    compared: int = 0

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "regression"]


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Thresholds: the built-in defaults, then the YAML file, then ``metric.key=value`` overrides."""
    config = json.loads(json.dumps(BUILTIN))
    path = Path(path) if path else DEFAULT_CONFIG
    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        for name, spec in (data.get("metrics") or {}).items():
            config["metrics"][name] = {**config["metrics"].get(name, {"relative": 0.0, "absolute": 0.0}), **spec}
        for key in ("fail_on_status", "fail_on_missing"):
            if key in data:
                config[key] = bool(data[key])
    elif path != DEFAULT_CONFIG:
        raise FileNotFoundError(f"no regression config at {path}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes metric.key=value (e.g. steps_per_s.relative=0.1), not {item!r}")
        if key in ("fail_on_status", "fail_on_missing"):
            config[key] = value.lower() in ("1", "true", "yes")
            continue
        metric, _, attr = key.partition(".")
        if attr not in ("better", "relative", "absolute"):
            raise ValueError(f"--set {item!r}: the key must be <metric>.better|relative|absolute")
        spec = config["metrics"].setdefault(metric, {"better": "higher", "relative": 0.0, "absolute": 0.0})
        spec[attr] = value if attr == "better" else float(value)
    for name, spec in config["metrics"].items():
        if spec.get("better") not in ("higher", "lower"):
            raise ValueError(f"regression threshold {name}: better must be 'higher' or 'lower'")
    return config


def identity(record: dict) -> tuple:
    """What a cell ran, independent of library versions and of when it ran."""
    work = record.get("workload") or {}
    return (record.get("model"), (record.get("env") or {}).get("device_name"), record.get("engine"),
            record.get("dtype"), record.get("mode"), tuple(record.get("components") or ()), record.get("offload"),
            record.get("compile"), work.get("name"), work.get("steps"), work.get("width"), work.get("height"),
            work.get("n_prompts"), work.get("n_seeds"))


def cell_label(key: tuple) -> str:
    """A cell `identity` as the report names it: model, engine:dtype, mode, offload/compile, workload, GPU."""
    model, device, engine, dtype, mode, _, offload, compile_, work, steps, width, height = key[:12]
    extra = "".join(f" {k}={v}" for k, v in (("offload", offload), ("compile", compile_)) if v not in (None, "none"))
    return f"{model} {engine}:{dtype} {mode}{extra} [{work} {width}x{height} {steps} steps] on {device}"


def figure(record: dict, metric: str) -> float | None:
    """The tracked figure ``metric`` of a record (`reports.columns.figure_path`), None unless a number."""
    value = lookup(record, figure_path(metric))
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(tonight: list[dict], baseline: list[dict], config: dict | None = None) -> Outcome:
    """Compare two sets of records (each reduced to the newest per cell)."""
    config = config or load_config()
    now, before = newest(tonight, identity), newest(baseline, identity)
    outcome = Outcome()
    for key, old in before.items():
        cell = cell_label(key)
        new = now.get(key)
        if new is None:
            kind = "regression" if config["fail_on_missing"] else "note"
            outcome.findings.append(Finding(cell, "cell", old.get("status"), "missing", kind, "not measured tonight"))
            continue
        outcome.compared += 1
        if old.get("status") == "ok" and new.get("status") != "ok":
            kind = "regression" if config["fail_on_status"] else "note"
            message = ((new.get("error") or {}).get("message") or "")[:200]
            outcome.findings.append(Finding(cell, "status", "ok", new.get("status"), kind, message))
            continue
        if old.get("status") != "ok" and new.get("status") == "ok":
            outcome.findings.append(Finding(cell, "status", old.get("status"), "ok", "improvement"))
        if new.get("status") != "ok":
            continue
        for metric, spec in config["metrics"].items():
            a, b = figure(old, metric), figure(new, metric)
            if a is None or b is None:
                continue
            threshold = max(spec.get("relative", 0.0) * abs(a), spec.get("absolute", 0.0))
            noise = spread.allowance(old, new, metric)
            allowance = max(threshold, noise)
            worse = (a - b) if spec["better"] == "higher" else (b - a)
            change = f"{(b - a) / abs(a):+.1%}" if a else f"{b - a:+.4g}"
            if worse > allowance:
                why = ", the nights' spread" if noise > threshold else ""
                outcome.findings.append(Finding(cell, metric, a, b, "regression",
                                                f"{change} (allowed: {allowance:.4g} worse{why})"))
            elif worse > threshold:
                outcome.findings.append(Finding(cell, metric, a, b, "note",
                                                f"{change}: beyond the threshold ({threshold:.4g}), within the "
                                                f"nights' spread ({noise:.4g})"))
            elif -worse > allowance and allowance > 0:
                outcome.findings.append(Finding(cell, metric, a, b, "improvement", change))
    for key in now.keys() - before.keys():
        outcome.findings.append(Finding(cell_label(key), "cell", "missing", now[key].get("status"), "note",
                                        "new tonight: no baseline"))
    return outcome


def to_markdown(outcome: Outcome, config: dict) -> str:
    """The check as markdown: the verdict, the thresholds, then every finding (regressions first)."""
    regressions = outcome.regressions
    head = "REGRESSION" if regressions else "no regression"
    lines = [f"## Nightly regression check: {head}", "",
             f"{outcome.compared} cells compared with the previous night; {len(regressions)} regressions.", "",
             "Thresholds: " + ", ".join(f"{m} {s['better']} is better (allowed worse: {s['relative']:.0%} or "
                                        f"{s['absolute']:g})" for m, s in config["metrics"].items())
             + "; where the nights measured a run-to-run spread (3+ repeats), the larger of the threshold and "
               "that spread.", ""]
    if outcome.findings:
        lines += ["| | cell | figure | previous night | tonight | change |", "|---|---|---|---|---|---|"]
        order = {"regression": 0, "improvement": 1, "note": 2}
        mark = {"regression": "FAIL", "improvement": "better", "note": "note"}
        for f in sorted(outcome.findings, key=lambda f: (order[f.kind], f.cell, f.metric)):
            lines.append(f"| {mark[f.kind]} | {f.cell} | {f.metric} | {_fmt(f.baseline)} | {_fmt(f.tonight)} | "
                         f"{f.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def no_baseline(location: str) -> str:
    """The report of a night without a previous night to compare with."""
    return f"## Nightly regression check: no baseline\n\nNo previous night at {location}; nothing compared.\n"
