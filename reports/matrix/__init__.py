"""The incompatibility error matrix, built from stored result records only (never written by hand).

One cell per engine x dtype x offload x compile (per model and device) with its status and, for a
failure, the exception type and the first line of its message. Identical errors are grouped and listed
once with every combination that hits them. Known upstream reports (``reports/known_issues.yaml``) are
matched against the cells, and the report marks where reality disagrees: a known failure that no longer
reproduces, one that fails differently, or a combination documented to work that fails here.

One module per job: `known` (the annotations and their verdicts), `frame` (the table), `groups` (error
grouping), `markdown` and `html` (the two renderings). Every function takes the records and, as
``known``, the annotations (default: the shipped file).
"""
from __future__ import annotations

from pathlib import Path

from reports.matrix.frame import COMPILE_ORDER, OFFLOAD_ORDER, matrix_frame
from reports.matrix.groups import from_frame, label
from reports.matrix.html import to_html
from reports.matrix.known import FAILURES, KNOWN_ISSUES, VERDICTS, applies, load_known_issues, verdict
from reports.matrix.markdown import to_markdown

__all__ = ["COMPILE_ORDER", "FAILURES", "KNOWN_ISSUES", "OFFLOAD_ORDER", "VERDICTS", "applies", "error_groups",
           "label", "load_known_issues", "matrix_frame", "render", "to_html", "to_markdown", "verdict"]


def error_groups(records: list[dict], known: list[dict] | None = None) -> list[dict]:
    """Identical failures listed once (`reports.matrix.groups.from_frame`)."""
    return from_frame(matrix_frame(records, known))


def render(records: list[dict], out_dir: str | Path, known: list[dict] | None = None) -> dict[str, Path]:
    """Write ``matrix.md`` and ``matrix.csv`` (one row per combination) into ``out_dir``; return their paths."""
    known = load_known_issues() if known is None else known
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "matrix.md", "csv": out / "matrix.csv"}
    paths["markdown"].write_text(to_markdown(records, known))
    matrix_frame(records, known).to_csv(paths["csv"], index=False)
    return paths
