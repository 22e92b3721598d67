"""Known upstream reports: the shipped file, a malformed one, and each verdict a measured cell can give."""
import pytest

from reports import matrix
from reports.matrix import known
from tests.reports.samples import MATRIX, MATRIX_KNOWN


def _row(df, engine, dtype, offload, compile="none"):
    rows = df[(df.engine == engine) & (df.dtype == dtype) & (df.offload == offload) & (df.compile == compile)]
    assert len(rows) == 1
    return rows.iloc[0]


@pytest.mark.parametrize("engine, dtype, offload, expected, disagrees", [
    ("bnb", "nf4", "sequential", "K1: reproduces", False),
    ("quanto", "int8", "balanced", "K2: no longer reproduces", True),
    ("quanto", "int8", "sequential", "K3: fails differently", True),
    ("sdnq", "int8", "balanced", "K4: fails, documented to work", True),
    ("torchao", "int4", "model", "K5: reproduces", False),   # oom counts as a failure
    ("gguf", "q8_0", "model", "K6: untested here", False),   # unsupported here: no evidence either way
    ("bf16", "bf16", "none", None, False),
], ids=["reproduces", "no-longer-reproduces", "fails-differently", "documented-ok-fails", "oom-failure",
        "unsupported-untested", "no-annotation"])
def test_annotations_agree_or_disagree_with_reality(engine, dtype, offload, expected, disagrees):
    row = _row(matrix.matrix_frame(MATRIX, MATRIX_KNOWN), engine, dtype, offload)
    assert row.verdicts == expected and bool(row.disagrees) is disagrees


def test_marks_and_news_of_a_cells_verdicts():
    verdicts = "K1: reproduces;K2: no longer reproduces;K3: untested here"
    assert known.marks(verdicts) == "K1✓ K2✗ K3?"
    assert known.news(verdicts) == "K2: no longer reproduces"
    assert known.marks(None) == "" and known.news(None) == ""


def test_shipped_known_issues_cover_the_documented_reports():
    shipped = matrix.load_known_issues()
    assert all(k["source"] and k["expect"] for k in shipped)
    messages = " ".join(k["expect"].get("message", "") for k in shipped)
    for text in ("Blockwise quantization only supports 16/32-bit floats",
                 "QBytesTensor.__new__() missing 5 required positional arguments",
                 "Expected all tensors to be on the same device"):
        assert text in messages
    ids = {k["id"] for k in shipped}
    assert {"gguf-offload", "torchao-int4-offload", "nncf-fused-projections"} <= ids
    cell = {"engine": "quanto", "dtype": "int4", "offload": "balanced", "compile": "regional", "model": "flux-dev"}
    assert [k["id"] for k in shipped if matrix.applies(k, cell)] == ["quanto-balanced"]


def test_bad_known_issue_file_is_refused(tmp_path):
    bad = tmp_path / "known.yaml"
    bad.write_text("- id: x\n  engine: bnb\n")
    with pytest.raises(ValueError, match="needs engine, expect and source"):
        matrix.load_known_issues(bad)
