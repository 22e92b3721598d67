"""Identical failures are grouped once, with every combination that hits them."""
from reports import matrix
from tests.reports.samples import MATRIX, MATRIX_KNOWN


def test_identical_errors_are_grouped_once_with_every_combination():
    groups = matrix.error_groups(MATRIX, MATRIX_KNOWN)
    by_type = {}
    for g in groups:
        by_type.setdefault((g["status"], g["type"]), []).append(g)
    (bnb,) = [g for g in groups if "Blockwise" in g["message"]]
    assert bnb["count"] == 2 and bnb["id"] == "E1"  # most cells first
    assert bnb["cells"] == ["bnb:nf4 offload=sequential compile=none", "bnb:nf4 offload=group compile=none"]
    assert bnb["known"] == ["K1"]
    assert bnb["stages"] == [None, "first call (1 of 1), before its first step"]  # a record may have none
    # out-of-memory with different sizes: one group
    (oom,) = by_type[("oom", "OutOfMemoryError")]
    assert oom["count"] == 2 and "<size>" in oom["normalized"]
    # the two unsupported reasons differ only by the mode name: two groups, listed after the failures
    unsupported = [g for g in groups if g["status"] == "unsupported"]
    assert [g["id"] for g in unsupported] == ["U1", "U2"] and groups[-2:] == unsupported
    assert sum(g["count"] for g in groups) == sum(r["status"] != "ok" for r in MATRIX)
