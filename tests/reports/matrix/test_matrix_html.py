"""The matrix's HTML fragment: escaped, a class per status, the failed cell's stage in its tooltip."""
from reports import matrix
from tests.reports.samples import MATRIX, MATRIX_KNOWN


def test_html_fragment_escapes_and_marks_statuses():
    fragment = matrix.to_html(MATRIX, MATRIX_KNOWN)
    assert not fragment.lstrip().startswith(("<html", "<!DOCTYPE")) and "<body" not in fragment
    for status in ("ok", "unsupported", "error", "oom", "timeout", "crashed"):
        assert f"status-{status}" in fragment
    assert "disagrees" in fragment and "&lt;bad&gt; &amp; &#x27;shapes&#x27;" in fragment
    assert "<bad>" not in fragment
    assert "| in first call (1 of 1), before its first step" in fragment  # a failed cell's stage, in its tooltip
    assert "No results" in matrix.to_html([], MATRIX_KNOWN)


def test_fragment_carries_its_style_once():
    fragment = matrix.to_html(MATRIX, MATRIX_KNOWN)
    assert fragment.count("<style>") == 1 and ".error-matrix td.status-ok" in fragment
