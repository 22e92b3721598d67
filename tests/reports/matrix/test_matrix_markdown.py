"""matrix.md and matrix.csv: provenance, one table per compile mode, disagreements, grouped failures."""
import csv

from reports import matrix
from tests.reports.samples import MATRIX, MATRIX_KNOWN


def test_render_writes_markdown_and_csv_with_provenance(tmp_path):
    paths = matrix.render(MATRIX, tmp_path, MATRIX_KNOWN)
    md = paths["markdown"].read_text()
    assert "## flux-dev on NVIDIA H200" in md
    for text in ("570.86", "12.8", "torch 2.11.0", "bitsandbytes 0.50.2", "512x512 px", "4 steps",
                 "not benchmarks", "abc123", "synthetic"):
        assert text in md, text
    assert "### compile=none" in md and "### compile=regional" in md
    assert "| bnb:nf4 | - | - | error E1 [K1✓] | error E1 |" in md
    assert "ok [K2✗]" in md and "crashed E" in md and "[K4✗]" in md and "unsupported U" in md
    news = md.split("## Where reality disagrees")[1].split("##")[0]
    assert "quanto:int8 offload=balanced" in news and "no longer reproduces" in news
    assert "sdnq:int8 offload=balanced" in news and "bnb:nf4" not in news
    assert "not covered by this matrix: fused projections" in md
    assert "- bnb:nf4 offload=group compile=none (in first call (1 of 1), before its first step)\n" in md
    assert "- bnb:nf4 offload=sequential compile=none\n" in md
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(MATRIX)
    assert {"status", "error_type", "message", "stage", "error_group", "verdicts"} <= set(rows[0])
    timeout = [r for r in rows if r["status"] == "timeout"][0]
    assert timeout["stage"] == "first call (1 of 1), step 2 of 4 done"


def test_empty_matrix(tmp_path):
    assert "No results in the store yet" in matrix.render([], tmp_path, MATRIX_KNOWN)["markdown"].read_text()
