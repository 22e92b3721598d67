"""Known upstream reports (``reports/known_issues.yaml``) and what the measured cells say about each.

An annotation names the cells it concerns by shell-style patterns (engine, dtype, offload, compile, model)
and what it expects of them (a status, ``failure`` or ``ok``, optionally a message substring); `verdict`
compares one measured cell with it. The file's own header documents its keys.
"""
from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path

import yaml

from harness.status import CRASHED, ERROR, OOM, TIMEOUT

#: The shipped annotations: ``reports/known_issues.yaml``.
KNOWN_ISSUES = resources.files("reports") / "known_issues.yaml"
#: Statuses that count as a failure (``expect: {status: failure}``).
FAILURES = (ERROR, OOM, TIMEOUT, CRASHED)
#: verdict -> (mark in a matrix cell, whether it is news: reality disagrees with the annotation)
VERDICTS = {
    "reproduces": ("✓", False),
    "works as documented": ("✓", False),
    "no longer reproduces": ("✗", True),
    "fails differently": ("~", True),
    "fails, documented to work": ("✗", True),
    "untested here": ("?", False),
}


def load_known_issues(path: str | Path | None = None) -> list[dict]:
    """The annotations in ``path`` (default: the shipped file), each with a ``key`` (``K1``, ``K2``, ... in
    file order, unless the entry names its own). Raises ValueError for an entry without engine, expect and source."""
    text = Path(path).read_text() if path else KNOWN_ISSUES.read_text()
    out = []
    for i, entry in enumerate(yaml.safe_load(text) or [], 1):
        if "engine" not in entry or "expect" not in entry or "source" not in entry:
            raise ValueError(f"known issue #{i} needs engine, expect and source: {entry}")
        out.append({"key": f"K{i}", **entry})
    return out


def _matches(pattern, value) -> bool:
    patterns = pattern if isinstance(pattern, list) else [pattern]
    return any(fnmatch.fnmatchcase(str(value), str(p)) for p in patterns)


def applies(issue: dict, cell: dict) -> bool:
    """Whether annotation ``issue`` concerns ``cell`` (a row of `reports.matrix.frame.matrix_frame`). An
    annotation with a ``when`` condition concerns no cell: the matrix does not sweep that condition."""
    if issue.get("when"):
        return False
    return all(_matches(issue.get(k, "*"), cell[k]) for k in ("engine", "dtype", "offload", "compile", "model"))


def verdict(issue: dict, cell: dict) -> str:
    """What the measured ``cell`` says about annotation ``issue`` (one of `VERDICTS`). A cell the engine
    declared unsupported is no evidence either way, unless ``unsupported`` is what the annotation expects."""
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


def marks(verdicts: str | None) -> str:
    """A cell's ``verdicts`` text (``K1: reproduces;K4: no longer reproduces``) as marks: ``K1✓ K4✗``."""
    out = []
    for part in (verdicts or "").split(";"):
        if part:
            key, v = part.split(": ", 1)
            out.append(f"{key}{VERDICTS[v][0]}")
    return " ".join(out)


def news(verdicts: str | None) -> str:
    """The parts of a cell's ``verdicts`` text where reality disagrees with the annotation."""
    return "; ".join(p for p in (verdicts or "").split(";") if p and VERDICTS[p.split(": ", 1)[1]][1])
